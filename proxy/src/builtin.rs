//! Filters and configuration compiled into the binary: `wasm: builtin:NAME` in a config file,
//! and the demo that runs with no file at all.

/// The filters embedded in the binary, by name.
const BUILTINS: &[(&str, &[u8])] = &[
    (
        "add-header",
        include_bytes!(concat!(env!("WASMGATE_FILTERS_DIR"), "/add_header.wasm")),
    ),
    (
        "body-rewrite",
        include_bytes!(concat!(env!("WASMGATE_FILTERS_DIR"), "/body_rewrite.wasm")),
    ),
    (
        "ext-auth",
        include_bytes!(concat!(env!("WASMGATE_FILTERS_DIR"), "/ext_auth.wasm")),
    ),
    (
        "rate-limit",
        include_bytes!(concat!(env!("WASMGATE_FILTERS_DIR"), "/rate_limit.wasm")),
    ),
];

/// Names usable as `wasm: builtin:NAME`.
pub fn names() -> Vec<String> {
    BUILTINS.iter().map(|(n, _)| (*n).to_string()).collect()
}

/// The module of a built-in filter.
pub fn wasm(name: &str) -> Option<&'static [u8]> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// The configuration `wasmgate demo` runs: the add-header filter in front of the demo origin.
pub fn demo_config(listen: &str, origin: &str, admin: &str) -> String {
    format!(
        r#"# The chain `wasmgate demo` runs.
listen: {listen}
admin: {admin}
upstreams:
  demo-origin:
    endpoints: ["{origin}"]
filters:
  - name: add-header
    wasm: builtin:add-header
    configuration:
      request:
        add: {{x-wasmgate-demo: "added to the request by the add-header filter"}}
      response:
        set: {{x-powered-by: wasmgate}}
routes:
  - match: {{path_prefix: /}}
    upstream: demo-origin
"#
    )
}
