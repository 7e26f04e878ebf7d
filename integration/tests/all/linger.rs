//! A local reply to a request whose body the client is still sending reaches a client that
//! writes its whole body before reading (lingering close, as nginx's).

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmgate_integration::origin::Origin;
use wasmgate_integration::proxy::Proxy;

use crate::support::{config, testkit};

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_writes_its_whole_body_first_reads_the_filter_s_early_answer() {
    let origin = Origin::start().await;
    let refuse = testkit(
        "refuse",
        json!({"on_request_headers": [{"op": "local_reply", "status": 400, "body": "refused\n"}]}),
        "",
    );
    let proxy = Proxy::start(&config(&origin, &refuse));
    // 4 MiB: far more than the socket buffers hold, so the proxy answers long before the
    // client is done writing.
    let chunk = vec![b'x'; 64 * 1024];
    for round in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        stream
            .write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        for _ in 0..64 {
            let head = format!("{:x}\r\n", chunk.len());
            let write = async {
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(&chunk).await?;
                stream.write_all(b"\r\n").await
            };
            tokio::time::timeout(Duration::from_secs(10), write)
                .await
                .expect("the proxy keeps reading")
                .unwrap_or_else(|e| panic!("round {round}: the body write failed: {e}"));
        }
        stream.write_all(b"0\r\n\r\n").await.unwrap();
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        while !response.ends_with(b"refused\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
                .await
                .expect("the response comes")
                .unwrap_or_else(|e| panic!("round {round}: reading the response failed: {e}"));
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 400"), "round {round}: {text}");
        assert!(text.ends_with("refused\n"), "round {round}: {text}");
    }
    assert!(origin.received().is_empty(), "nothing went upstream");
}
