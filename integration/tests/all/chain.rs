//! Chain semantics: order, local replies, route-specific chains.

use serde_json::json;
use wasmgate_integration::client;
use wasmgate_integration::origin::Origin;
use wasmgate_integration::proxy::Proxy;

use crate::support::{add_header, config, testkit};

fn tag(name: &str) -> String {
    add_header(
        name,
        json!({"request": {"add": {"x-order": name}}, "response": {"add": {"x-order": name}}}),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn request_callbacks_run_in_order_and_response_callbacks_in_reverse() {
    let origin = Origin::start().await;
    let filters = format!("{}{}{}", tag("first"), tag("second"), tag("third"));
    let proxy = Proxy::start(&config(&origin, &filters));
    let resp = client::http().get(proxy.url("/")).send().await.unwrap();
    assert_eq!(
        origin.last().header_all("x-order"),
        ["first", "second", "third"]
    );
    assert_eq!(
        client::header_all(&resp, "x-order"),
        ["third", "second", "first"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_reply_answers_without_the_upstream_and_response_callbacks_see_it() {
    let origin = Origin::start().await;
    let deny = testkit(
        "deny",
        json!({
            "on_request_headers": [{
                "op": "local_reply", "status": 403, "body": "denied by filter\n",
                "headers": [["x-denied-by", "deny"]],
                "when": {"request_header": "x-deny"}
            }]
        }),
        "",
    );
    let filters = format!("{}{deny}{}", tag("before"), tag("after"));
    let proxy = Proxy::start(&config(&origin, &filters));
    let http = client::http();

    let resp = http
        .get(proxy.url("/"))
        .header("x-deny", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(client::header_all(&resp, "x-denied-by"), ["deny"]);
    assert_eq!(client::header_all(&resp, "content-type"), ["text/plain"]);
    // Every filter's response callback saw the reply (Envoy runs the whole encoder chain).
    assert_eq!(client::header_all(&resp, "x-order"), ["after", "before"]);
    assert_eq!(resp.text().await.unwrap(), "denied by filter\n");
    assert!(
        origin.received().is_empty(),
        "the upstream was never contacted"
    );

    // The same proxy keeps serving normal requests.
    let resp = http.get(proxy.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(origin.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_reply_from_the_response_phase_replaces_the_upstream_response() {
    let origin = Origin::start().await;
    let replacer = testkit(
        "replacer",
        json!({
            "on_response_headers": [{
                "op": "local_reply", "status": 451, "body": "replaced\n",
                "when": {"request_header": "x-replace"}
            }]
        }),
        "",
    );
    let filters = format!("{}{replacer}", tag("outer"));
    let proxy = Proxy::start(&config(&origin, &filters));
    let http = client::http();
    let resp = http
        .get(proxy.url("/"))
        .header("x-replace", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 451);
    // The unread upstream response makes the connection unusable: the client is told.
    assert_eq!(client::header_all(&resp, "connection"), ["close"]);
    assert!(client::header_all(&resp, "x-origin").is_empty());
    assert_eq!(
        client::header_all(&resp, "x-order"),
        ["outer"],
        "the outer filter saw the reply"
    );
    assert_eq!(resp.text().await.unwrap(), "replaced\n");
    assert_eq!(origin.received().len(), 1);
    let resp = http.get(proxy.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_choose_their_chain() {
    let origin = Origin::start().await;
    let config = format!(
        r#"listen: "{{listen}}"
admin: "{{admin}}"
upstreams:
  origin:
    endpoints: ["{}"]
filters:
{}{}
routes:
  - match: {{path_prefix: /none}}
    upstream: origin
    filters: []
  - match: {{path_prefix: /second}}
    upstream: origin
    filters: [second]
  - upstream: origin
"#,
        origin.endpoint(),
        tag("first"),
        tag("second")
    );
    let proxy = Proxy::start(&config);
    let http = client::http();
    http.get(proxy.url("/none")).send().await.unwrap();
    assert!(origin.last().header_all("x-order").is_empty());
    http.get(proxy.url("/second")).send().await.unwrap();
    assert_eq!(origin.last().header_all("x-order"), ["second"]);
    http.get(proxy.url("/default")).send().await.unwrap();
    assert_eq!(origin.last().header_all("x-order"), ["first", "second"]);
}
