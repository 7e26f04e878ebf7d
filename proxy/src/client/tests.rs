use std::io::Cursor;

use tokio::io::AsyncReadExt;

use super::*;

fn limits(max_header_bytes: u64) -> ClientLimits {
    ClientLimits {
        max_header_bytes,
        ..ClientLimits::default()
    }
}

fn stream(bytes: &[u8], limits: ClientLimits) -> GuardedStream {
    GuardedStream::new(Box::new(Cursor::new(bytes.to_vec())), limits)
}

#[tokio::test]
async fn a_header_read_never_hands_the_parser_more_than_the_cap() {
    let mut s = stream(&vec![b'a'; 10_000], limits(1024));
    let mut buf = vec![0u8; 8192];
    let mut total = 0;
    let err = loop {
        match s.read(&mut buf).await {
            Ok(0) => panic!("end of stream before the cap"),
            Ok(n) => total += n,
            Err(e) => break e,
        }
    };
    assert_eq!(total, 1024);
    assert!(err.to_string().contains("over 1024 bytes"), "{err}");
    // Refused for good.
    assert!(s.read(&mut buf).await.is_err());
}

#[tokio::test]
async fn once_the_header_is_in_reads_are_not_capped() {
    let mut s = stream(&vec![b'a'; 10_000], limits(1024));
    let mut buf = vec![0u8; 100];
    assert_eq!(s.read(&mut buf).await.unwrap(), 100);
    s.header_done();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest.len(), 9_900);
    // The next request on the connection is capped again, from zero.
    s.next_request();
    assert!(matches!(
        s.shared.lock().phase,
        Phase::Header {
            since: None,
            bytes: 0
        }
    ));
}

#[tokio::test]
async fn a_peek_answers_as_soon_as_the_bytes_cannot_be_the_preface() {
    let request = b"GET / HTTP/1.0\r\n\r\n";
    let mut s = stream(request, limits(1024));
    let mut peeked = [0xffu8; 24];
    assert!(s.try_peek(&mut peeked).await.unwrap());
    assert_ne!(&peeked[..], H2_PREFACE);
    assert_eq!(
        &peeked[..1],
        b"G",
        "it stops at the first byte that differs"
    );
    // Nothing is lost: the reads see every byte.
    let mut all = Vec::new();
    s.read_to_end(&mut all).await.unwrap();
    assert_eq!(all, request);
}

#[tokio::test]
async fn the_http2_preface_turns_the_limits_off() {
    let mut bytes = H2_PREFACE.to_vec();
    bytes.extend(vec![0u8; 5000]);
    let mut s = stream(&bytes, limits(1024));
    let mut peeked = [0u8; 24];
    assert!(s.try_peek(&mut peeked).await.unwrap());
    assert_eq!(&peeked[..], H2_PREFACE);
    let mut all = Vec::new();
    s.read_to_end(&mut all).await.unwrap();
    assert_eq!(all, bytes, "no cap on an HTTP/2 connection");
}

#[test]
fn a_body_under_the_minimum_rate_is_refused_after_the_grace() {
    let limits = ClientLimits {
        body_timeout_ms: 100,
        body_min_rate: 1000,
        ..ClientLimits::default()
    };
    let mut clock = BodyClock::default();
    assert!(
        on_body_chunk(&mut clock, 10, &limits).is_ok(),
        "within the grace"
    );
    std::thread::sleep(Duration::from_millis(150));
    let err = on_body_chunk(&mut clock, 10, &limits).unwrap_err();
    assert_eq!(err.etype(), &ErrorType::HTTPStatus(408));
    let fast = ClientLimits {
        body_min_rate: 10,
        ..limits
    };
    let mut clock = BodyClock::default();
    on_body_chunk(&mut clock, 1000, &fast).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    assert!(
        on_body_chunk(&mut clock, 1000, &fast).is_ok(),
        "fast enough"
    );
}
