use std::path::Path;

use super::*;
use crate::testing::{FILE, opts};

fn vars(name: &str) -> Option<String> {
    match name {
        "PORT" => Some("9000".to_owned()),
        "HOST" => Some("127.0.0.1".to_owned()),
        "EMPTY" => Some(String::new()),
        "LONG_NAME_1" => Some("λ-long".to_owned()),
        "TWO_LINES" => Some("a\nb".to_owned()),
        _ => None,
    }
}

fn sub(text: &str) -> Result<String, Vec<String>> {
    substitute(text, Path::new(FILE), &vars)
        .map(|s| s.text.into_owned())
        .map_err(|e| e.iter().map(ToString::to_string).collect())
}

#[test]
fn variables_and_defaults_are_replaced() {
    assert_eq!(sub("a: ${HOST}:${PORT}\n").unwrap(), "a: 127.0.0.1:9000\n");
    assert_eq!(sub("a: ${NOPE:-x y}\n").unwrap(), "a: x y\n");
    assert_eq!(sub("a: ${PORT:-1}\n").unwrap(), "a: 9000\n");
    assert_eq!(sub("a: ${NOPE:-}\n").unwrap(), "a: \n");
    // `:-` also covers a variable set to the empty string, as in the shell.
    assert_eq!(sub("a: ${EMPTY:-d}\n").unwrap(), "a: d\n");
    assert_eq!(sub("a: [${EMPTY}]\n").unwrap(), "a: []\n");
    assert_eq!(sub("a: ${LONG_NAME_1}").unwrap(), "a: λ-long");
}

#[test]
fn dollars_without_a_brace_and_escapes_stay_literal() {
    assert_eq!(sub("a: $PORT $ 5$\n").unwrap(), "a: $PORT $ 5$\n");
    assert_eq!(
        sub("a: $${PORT} $${NOPE}\n").unwrap(),
        "a: ${PORT} ${NOPE}\n"
    );
    assert_eq!(sub("a: $$x\n").unwrap(), "a: $$x\n");
}

#[test]
fn comment_lines_are_left_alone() {
    let text = "# uses ${NOPE}\n  # and ${ALSO_NOPE\na: ${PORT} # ${PORT}\n";
    assert_eq!(
        sub(text).unwrap(),
        "# uses ${NOPE}\n  # and ${ALSO_NOPE\na: 9000 # 9000\n"
    );
}

#[test]
fn unset_variables_are_errors_at_their_line_and_column() {
    let text = "a: 1\nb: x ${NOPE}\nc: ${PORT}${ALSO_NOPE}\n";
    assert_eq!(
        sub(text).unwrap_err(),
        [
            "wasmgate.yaml:2:6: environment variable NOPE is not set and \"${NOPE}\" has no default (write ${NOPE:-default} for one)",
            "wasmgate.yaml:3:11: environment variable ALSO_NOPE is not set and \"${ALSO_NOPE}\" has no default (write ${ALSO_NOPE:-default} for one)",
        ]
    );
}

#[test]
fn malformed_references_and_multi_line_values_are_errors() {
    assert_eq!(
        sub("a: ${PORT\n").unwrap_err(),
        [
            "wasmgate.yaml:1:4: unclosed \"${\": write ${NAME} or ${NAME:-default}, or $${ for a literal \"${\""
        ]
    );
    assert_eq!(
        sub("a: ${1X} ${} ${A B}\n").unwrap_err(),
        [
            "wasmgate.yaml:1:4: invalid variable name \"1X\" in \"${1X}\": use letters, digits and '_', not starting with a digit",
            "wasmgate.yaml:1:10: invalid variable name \"\" in \"${}\": use letters, digits and '_', not starting with a digit",
            "wasmgate.yaml:1:14: invalid variable name \"A B\" in \"${A B}\": use letters, digits and '_', not starting with a digit",
        ]
    );
    assert_eq!(
        sub("a: ${TWO_LINES}\n").unwrap_err(),
        [
            "wasmgate.yaml:1:4: environment variable TWO_LINES holds a line break: only one-line values can be substituted"
        ]
    );
}

#[test]
fn columns_map_back_to_the_text_as_written() {
    let s = substitute(
        "a: ${HOST}:${PORT} x\nb: ${PORT}\nc: $${y} z\n",
        Path::new(FILE),
        &vars,
    )
    .expect("substituted");
    assert_eq!(s.text, "a: 127.0.0.1:9000 x\nb: 9000\nc: ${y} z\n");
    let at = |line, column| {
        let mut l = Location {
            file: FILE.into(),
            line,
            column,
        };
        s.restore(&mut l);
        l.column
    };
    // Line 1: "a: " is unchanged, the host's value maps to its "$", ":" after it moves.
    assert_eq!(at(1, 1), 1);
    assert_eq!(at(1, 4), 4);
    assert_eq!(at(1, 8), 4);
    assert_eq!(at(1, 13), 11, "the ':' between them");
    assert_eq!(at(1, 14), 12, "inside 9000: the second '$'");
    assert_eq!(at(1, 19), 20, "the 'x'");
    assert_eq!(at(2, 5), 4);
    assert_eq!(at(2, 8), 11, "past the end");
    assert_eq!(at(3, 4), 4, "the escaped '$${{'");
    assert_eq!(at(3, 9), 10, "the 'z'");
    // A line without substitutions keeps its columns.
    assert_eq!(at(4, 7), 7);
}

#[test]
fn parse_errors_after_substitution_point_into_the_file_as_written() {
    let text = "listen: ${HOST}:${PORT}\nupstreams:\n  b:\n    endpoints: [\"${HOST}:${PORT}\"]\nroutes:\n  - {upstream: ${NOPE:-b}, filters: [${NOPE:-x}]}\n";
    let errors = crate::parse::parse_with_env(text, Path::new(FILE), &opts(), &vars)
        .expect_err("an unknown filter");
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [r#"wasmgate.yaml:6:38: routes[0].filters[0]: unknown filter "x" (known: none)"#]
    );
    let good = text.replace(", filters: [${NOPE:-x}]", "");
    let config = crate::parse::parse_with_env(&good, Path::new(FILE), &opts(), &vars)
        .expect("a valid config");
    assert_eq!(config.listen, ["127.0.0.1:9000".parse().expect("literal")]);
    assert_eq!(config.upstreams[0].endpoints[0].address, "127.0.0.1:9000");
    // A serde error on a substituted line, too.
    let typo = good.replace("upstream: ${NOPE:-b}}", "upstream: ${NOPE:-b}, filter: []}");
    let errors = crate::parse::parse_with_env(&typo, Path::new(FILE), &opts(), &vars)
        .expect_err("an unknown key");
    assert!(
        errors
            .to_string()
            .starts_with("wasmgate.yaml:6:28: routes[0].filter: unknown field"),
        "{errors}"
    );
}
