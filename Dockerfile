# wasmgate container image: build with the toolchain in rust-toolchain.toml, run as a non-root
# user on Debian slim. The configuration and filter modules are mounted, not built in:
#
#   docker build --build-arg WASMGATE_COMMIT=$(git rev-parse --short HEAD) -t wasmgate .
#   docker run -p 8080:8080 \
#     -v $PWD/deploy/wasmgate.yaml:/etc/wasmgate/wasmgate.yaml:ro \
#     -v $PWD/modules:/var/lib/wasmgate/modules:ro wasmgate
#
# The configuration must listen on 0.0.0.0 (as deploy/wasmgate.yaml does) and put the admin
# listener on port 9901 for the health check below.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# The image has no .git: the commit `wasmgate --version` prints comes from this argument.
ARG WASMGATE_COMMIT=unknown
ENV WASMGATE_COMMIT=${WASMGATE_COMMIT}
# rustup reads rust-toolchain.toml and adds the wasm32-wasip1 target the built-in filters need.
RUN cargo build --release --locked -p wasmgate \
 && install -m 0755 target/release/wasmgate /usr/local/bin/wasmgate

FROM debian:bookworm-slim
# curl only for the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin wasmgate \
 && install -d -o wasmgate -g wasmgate -m 0700 /var/cache/wasmgate \
 && install -d -m 0755 /etc/wasmgate /var/lib/wasmgate/modules
COPY --from=build /usr/local/bin/wasmgate /usr/local/bin/wasmgate
USER wasmgate
VOLUME ["/var/cache/wasmgate"]
EXPOSE 8080 9901
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD curl -fsS http://127.0.0.1:9901/ready || exit 1
# SIGTERM (docker stop) drains requests in flight for up to 5 s; give it 10 (--stop-timeout).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/wasmgate"]
CMD ["run", "-c", "/etc/wasmgate/wasmgate.yaml"]
