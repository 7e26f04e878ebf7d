use super::*;

fn request(target: &str, host: Option<&str>) -> RequestHeader {
    let mut req = RequestHeader::build("GET", target.as_bytes(), None).expect("a request");
    if let Some(host) = host {
        req.insert_header("Host", host).expect("a host");
    }
    req
}

fn redirect_to(scheme: Option<&str>, host: Option<&str>, path: Option<&str>) -> Redirect {
    Redirect {
        scheme: scheme.map(str::to_owned),
        host: host.map(str::to_owned),
        path: path.map(str::to_owned),
        status: 301,
    }
}

#[test]
fn a_redirect_keeps_what_it_does_not_set_and_always_the_query() {
    let req = request("/a/b?x=1&y", Some("example.com:8080"));
    let at = |r: Redirect, tls| location(&r, &req, tls);
    assert_eq!(
        at(redirect_to(None, None, None), false),
        "http://example.com:8080/a/b?x=1&y"
    );
    assert_eq!(
        at(redirect_to(None, None, None), true),
        "https://example.com:8080/a/b?x=1&y"
    );
    // A new scheme drops the port the old one was reached on.
    assert_eq!(
        at(redirect_to(Some("https"), None, None), false),
        "https://example.com/a/b?x=1&y"
    );
    assert_eq!(
        at(redirect_to(Some("http"), None, None), false),
        "http://example.com:8080/a/b?x=1&y"
    );
    assert_eq!(
        at(
            redirect_to(Some("https"), Some("new.example.com:8443"), Some("/c")),
            false
        ),
        "https://new.example.com:8443/c?x=1&y"
    );
    let v6 = request("/", Some("[::1]:8080"));
    assert_eq!(
        location(&redirect_to(Some("https"), None, None), &v6, false),
        "https://[::1]/"
    );
    // No host at all (HTTP/1.0): a relative location.
    let bare = request("/p", None);
    assert_eq!(
        location(&redirect_to(Some("https"), None, None), &bare, false),
        "/p"
    );
}

#[test]
fn direct_replies_get_a_content_type_only_with_a_body_and_none_given() {
    let plain = respond(&Respond {
        status: 200,
        body: "ok\n".to_owned(),
        headers: Vec::new(),
    });
    let resp = response(&plain);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.headers["content-type"], "text/plain");
    assert_eq!(resp.headers["content-length"], "3");

    let typed = respond(&Respond {
        status: 503,
        body: "{}".to_owned(),
        headers: vec![(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
    });
    let resp = response(&typed);
    assert_eq!(resp.status, 503);
    assert_eq!(resp.headers.get_all("content-type").iter().count(), 1);
    assert_eq!(resp.headers["content-type"], "application/json");

    let empty = respond(&Respond {
        status: 204,
        body: String::new(),
        headers: Vec::new(),
    });
    assert!(response(&empty).headers.get("content-type").is_none());
}
