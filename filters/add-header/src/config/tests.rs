use super::Config;

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn parse_accepts_object_and_list_forms() {
    let config = Config::parse(
        br#"{"request": {"remove": ["x-internal"], "set": {"x-env": "prod"},
                         "add": [["set-cookie", "a=1"], ["set-cookie", "b=2"]]},
             "response": {"remove": ["server"]}}"#,
    )
    .expect("valid config");
    assert_eq!(config.request.remove, ["x-internal"]);
    assert_eq!(config.request.set.0, pairs(&[("x-env", "prod")]));
    assert_eq!(
        config.request.add.0,
        pairs(&[("set-cookie", "a=1"), ("set-cookie", "b=2")])
    );
    assert_eq!(config.response.remove, ["server"]);
    assert!(config.response.set.0.is_empty());
}

#[test]
fn parse_keeps_object_order() {
    let config = Config::parse(br#"{"request": {"add": {"b": "1", "a": "2", "c": "3"}}}"#)
        .expect("valid config");
    assert_eq!(
        config.request.add.0,
        pairs(&[("b", "1"), ("a", "2"), ("c", "3")])
    );
}

#[test]
fn parse_empty_object_is_empty() {
    let config = Config::parse(b"{}").expect("valid config");
    assert!(config.is_empty());
    assert!(
        !Config::parse(br#"{"response": {"remove": ["server"]}}"#)
            .expect("valid config")
            .is_empty()
    );
}

#[test]
fn parse_rejects_unknown_key() {
    let err = Config::parse(br#"{"request": {"append": {"a": "b"}}}"#).unwrap_err();
    assert!(err.contains("unknown field `append`"), "{err}");
    let err = Config::parse(br#"{"requests": {}}"#).unwrap_err();
    assert!(err.contains("unknown field `requests`"), "{err}");
}

#[test]
fn parse_rejects_non_string_value() {
    let err = Config::parse(br#"{"request": {"set": {"x-n": 1}}}"#).unwrap_err();
    assert!(err.contains("invalid type: integer `1`"), "{err}");
    let err = Config::parse(br#"{"request": {"add": [["x-n", true]]}}"#).unwrap_err();
    assert!(err.contains("invalid type: boolean"), "{err}");
    let err = Config::parse(br#"{"request": {"add": "x-n"}}"#).unwrap_err();
    assert!(err.contains("invalid type: string"), "{err}");
}

#[test]
fn parse_rejects_invalid_json() {
    let err = Config::parse(b"{\"request\":").unwrap_err();
    assert!(err.contains("EOF"), "{err}");
}

#[test]
fn parse_rejects_bad_header_names_and_values() {
    let err = Config::parse(br#"{"request": {"remove": ["bad name"]}}"#).unwrap_err();
    assert!(err.contains("request.remove: invalid header name"), "{err}");
    let err = Config::parse(br#"{"response": {"set": {"": "v"}}}"#).unwrap_err();
    assert!(err.contains("response.set: invalid header name"), "{err}");
    let err = Config::parse(br#"{"response": {"add": {"x-a": "v\r\nx-b: evil"}}}"#).unwrap_err();
    assert!(
        err.contains("response.add.x-a: invalid header value"),
        "{err}"
    );
}

#[test]
fn parse_accepts_pseudo_headers_and_tabs() {
    let config =
        Config::parse(br#"{"request": {"set": {":authority": "example.com", "x-t": "a\tb"}}}"#)
            .expect("valid config");
    assert_eq!(config.request.set.0.len(), 2);
}
