//! Configurations shared by the tests.

use wasmgate_integration::filter;
use wasmgate_integration::origin::Origin;

/// A config with one upstream (`origin`), the given `filters:` items (YAML, indented as list
/// items at column 2) and one catch-all route with the default chain.
pub fn config(origin: &Origin, filters: &str) -> String {
    format!(
        r#"listen: "{{listen}}"
admin: "{{admin}}"
threads: 2
upstreams:
  origin:
    endpoints: ["{}"]
filters:
{filters}
routes:
  - upstream: origin
"#,
        origin.endpoint()
    )
}

/// A `filters:` item running the testkit fixture with a JSON script.
pub fn testkit(name: &str, script: serde_json::Value, extra: &str) -> String {
    format!(
        "  - name: {name}\n    wasm: {}\n    configuration: '{}'\n{extra}",
        filter("testkit"),
        script.to_string().replace('\'', "''")
    )
}

/// A `filters:` item running the add-header filter with a JSON configuration.
pub fn add_header(name: &str, configuration: serde_json::Value) -> String {
    format!(
        "  - name: {name}\n    wasm: {}\n    configuration: '{}'\n",
        filter("add_header"),
        configuration
    )
}

/// A `filters:` item running the body-rewrite filter with a JSON configuration.
pub fn body_rewrite(name: &str, configuration: serde_json::Value) -> String {
    format!(
        "  - name: {name}\n    wasm: {}\n    configuration: '{}'\n",
        filter("body_rewrite"),
        configuration
    )
}

/// A config like [`config`] with any upstream endpoint.
pub fn config_for(endpoint: &str, filters: &str) -> String {
    format!(
        r#"listen: "{{listen}}"
admin: "{{admin}}"
threads: 2
upstreams:
  origin:
    endpoints: ["{endpoint}"]
filters:
{filters}
routes:
  - upstream: origin
"#
    )
}
