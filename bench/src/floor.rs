//! A plain Pingora reverse proxy with none of wasmgate in it: no routing, no client limits, no
//! filter chain. The harness measures it beside wasmgate to show what Pingora itself costs.

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::prelude::{HttpPeer, ProxyHttp, Result, Session};
use pingora::server::Server;
use pingora::server::configuration::{Opt, ServerConf};

/// Every request goes to one upstream over kept-alive connections, as wasmgate does.
struct Floor {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

/// Serves until killed, on `threads` worker threads (wasmgate's benchmark config uses one).
pub fn serve(listen: SocketAddr, upstream: SocketAddr, threads: usize) -> ! {
    let conf = ServerConf {
        threads,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Floor { upstream });
    proxy.add_tcp(&listen.to_string());
    server.add_service(proxy);
    server.run_forever()
}
