//! Errors that stop parsing: YAML syntax, unknown keys, wrong types, empty files.

use crate::testing::{error, ok, parse};

const HEAD: &str = "\
listen: 127.0.0.1:8080
upstreams:
  backend:
    endpoints: [\"127.0.0.1:9000\"]
";

#[test]
fn syntax_error_is_reported_alone_with_line_and_column() {
    let text = format!("{HEAD}routes: [\n");
    assert_eq!(
        error(&text),
        "wasmgate.yaml:6:1: did not find expected node content, while parsing a flow node"
    );
}

#[test]
fn unknown_top_level_key_names_it_and_the_allowed_keys() {
    let text = format!("{HEAD}  # aligned\nrouts:\n  - upstream: backend\n");
    assert_eq!(
        error(&text),
        "wasmgate.yaml:6:1: routs: unknown field `routs`, expected one of \
         `listen`, `admin`, `threads`, `upstreams`, `filters`, `routes`, `cache_dir`, `upgrade_sock`, `listen_tls`, `limits`, `client`, `max_paused_streams`, `forwarding`, `access_log`"
    );
}

#[test]
fn unknown_nested_key_is_named_by_its_full_path() {
    let text =
        format!("{HEAD}routes:\n  - upstream: backend\n    match:\n      pathprefix: /api\n");
    assert_eq!(
        error(&text),
        "wasmgate.yaml:8:7: routes[0].match.pathprefix: unknown field `pathprefix`, \
         expected one of `path_prefix`, `path`, `path_regex`, `host`, `methods`, `headers`, \
         `query`"
    );
}

#[test]
fn unknown_key_in_a_filter_is_reported() {
    let text = format!(
        "{HEAD}filters:\n  - name: a\n    wasm: builtin:add-header\n    fail-open: true\n\
         routes:\n  - upstream: backend\n"
    );
    let e = error(&text);
    assert!(
        e.starts_with("wasmgate.yaml:8:5: filters[0].fail-open: unknown field `fail-open`"),
        "{e}"
    );
}

#[test]
fn missing_required_key_points_at_the_mapping() {
    let text = format!("{HEAD}filters:\n  - name: a\nroutes:\n  - upstream: backend\n");
    assert_eq!(
        error(&text),
        "wasmgate.yaml:6:5: filters[0]: missing field `wasm`"
    );
}

#[test]
fn wrong_type_points_at_the_value() {
    let text = format!("{HEAD}threads: many\nroutes:\n  - upstream: backend\n");
    assert_eq!(
        error(&text),
        "wasmgate.yaml:5:10: threads: invalid type: string \"many\", expected i64"
    );
}

#[test]
fn wrong_type_inside_listen_list_names_the_item() {
    let text = "listen: [127.0.0.1:1, {a: b}]\n";
    assert_eq!(
        error(text),
        "wasmgate.yaml:1:23: listen[1]: invalid type: map, expected a string"
    );
}

#[test]
fn repeated_key_points_at_the_second_occurrence() {
    let text = format!("{HEAD}routes:\n  - upstream: backend\n    upstream: backend\n");
    assert_eq!(
        error(&text),
        "wasmgate.yaml:7:5: routes[0].upstream: duplicate field `upstream`"
    );
}

#[test]
fn null_route_filters_is_rejected_not_read_as_default() {
    let text = format!("{HEAD}routes:\n  - upstream: backend\n    filters:\n");
    let e = error(&text);
    assert!(
        e.starts_with("wasmgate.yaml:7:13: routes[0].filters: invalid type: unit value, expected a list of filter names"),
        "{e}"
    );
}

#[test]
fn empty_file_is_an_error() {
    for text in ["", "  \n\n", "# nothing yet\n", "null\n", "~", "---\n"] {
        assert_eq!(
            error(text),
            "wasmgate.yaml:1:1: empty configuration file",
            "{text:?}"
        );
    }
}

#[test]
fn non_mapping_document_is_an_error() {
    assert_eq!(
        error("- a\n"),
        "wasmgate.yaml:1:1: invalid type: sequence, expected a mapping of wasmgate settings"
    );
}

#[test]
fn several_documents_are_an_error_placed_at_the_start() {
    let text = format!("{HEAD}routes: [{{upstream: backend}}]\n---\nlisten: x\n");
    assert_eq!(
        error(&text),
        "wasmgate.yaml:1:1: deserializing from YAML containing more than one document is not supported"
    );
}

/// serde_yaml (libyaml) and yaml-rust2 count differently inside; both must
/// print the same 1-based line and column for the same key.
#[test]
fn serde_and_index_positions_agree() {
    let typed = format!("{HEAD}routes:\n  - filters: []\n    upstreem: backend\n");
    let semantic = format!("{HEAD}routes:\n  - filters: []\n    upstream: bakend\n");
    let typed = error(&typed);
    let semantic = error(&semantic);
    assert!(
        typed.starts_with("wasmgate.yaml:7:5: routes[0].upstreem: "),
        "{typed}"
    );
    assert!(
        semantic.starts_with("wasmgate.yaml:7:5: routes[0].upstream: "),
        "{semantic}"
    );
    // Non-ASCII before the key: both count characters.
    let typed = format!("{HEAD}routes:\n  - {{match: {{host: é}}, upstreem: x}}\n");
    let semantic = format!("{HEAD}routes:\n  - {{match: {{host: é}}, upstream: x}}\n");
    assert!(
        error(&typed).starts_with("wasmgate.yaml:6:24: "),
        "{}",
        error(&typed)
    );
    let semantic = crate::testing::errors(&semantic);
    assert!(
        semantic
            .iter()
            .any(|e| e.starts_with("wasmgate.yaml:6:24: routes[0].upstream: ")),
        "{semantic:#?}"
    );
}

#[test]
fn crlf_line_endings_count_lines_the_same() {
    let typed = format!("{HEAD}routes:\n  - upstreem: x\n").replace('\n', "\r\n");
    let semantic = format!("{HEAD}routes:\n  - upstream: x\n").replace('\n', "\r\n");
    assert!(error(&typed).starts_with("wasmgate.yaml:6:5: routes[0].upstreem: "));
    assert!(error(&semantic).starts_with("wasmgate.yaml:6:5: routes[0].upstream: "));
}

#[test]
fn default_config_path_is_in_the_working_directory() {
    assert_eq!(
        crate::default_config_path(),
        std::path::Path::new("./wasmgate.yaml")
    );
}

#[test]
fn quoted_keys_with_colons_are_named_whole() {
    let text = "listen: 127.0.0.1:1\nupstreams:\n  \"a: b\":\n    endpoints: 5\n";
    assert_eq!(
        error(text),
        "wasmgate.yaml:4:16: upstreams.a: b.endpoints: invalid type: integer `5`, expected a sequence"
    );
}

#[test]
fn minimal_config_parses() {
    let c = ok(&format!("{HEAD}routes:\n  - upstream: backend\n"));
    assert_eq!(c.routes.len(), 1);
    assert!(parse("listen: 127.0.0.1:1\n").is_err());
}
