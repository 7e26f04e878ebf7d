//! `access_log:`: where the access log goes and how its lines look: the raw keys, their
//! checks, and the template language (`$name` variables in literal text).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::problem::Problem;
use crate::report::Report;

/// `access_log:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an access_log mapping")]
pub(crate) struct RawAccessLog {
    #[serde(default)]
    pub(crate) path: Option<String>,
    #[serde(default)]
    pub(crate) format: Option<String>,
}

/// Where access log lines are written (`path:`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccessLogPath {
    /// `stdout` (the default).
    #[default]
    Stdout,
    /// `stderr`, where wasmgate's own logs also go.
    Stderr,
    /// Any other value: a file, joined onto the config file's directory when relative;
    /// appended to, created if missing (its directory must exist).
    File(PathBuf),
}

/// One value an access log line can show. Each is a `$name` in a template and a field of
/// the JSON format (see [`Variable::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variable {
    /// When the request ended, RFC 3339 in UTC with milliseconds.
    Time,
    /// When the request ended, as Apache and nginx write it: `08/Dec/2026:00:18:25 +0000`.
    TimeLocal,
    /// The address of the peer that connected (no port).
    RemoteAddr,
    /// The peer's port.
    RemotePort,
    /// The client's address: the peer, or when the peer is a trusted proxy, the address the
    /// proxies' X-Forwarded-For gives (see `forwarding.trusted_proxies`).
    ClientAddr,
    Method,
    /// The request target as received (path and query).
    Path,
    /// The Host header (or HTTP/2 `:authority`).
    Host,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    Protocol,
    /// The status sent; 499 when the client left before a response was sent; 0 when there
    /// was none (the connection was reset).
    Status,
    /// Request body bytes received from the client.
    BytesIn,
    /// Response body bytes sent to the client.
    BytesOut,
    /// From the request head to the end of the response, in milliseconds (3 decimals).
    DurationMs,
    /// The upstream endpoint (`IP:PORT`) the request went to.
    Upstream,
    /// From choosing the upstream to its response head, in milliseconds (3 decimals).
    UpstreamMs,
    /// The route taken.
    Route,
    /// The request id (`forwarding.request_id`).
    RequestId,
    UserAgent,
    Referer,
    /// The filter that answered in place of the upstream (a local reply) or that failed the
    /// request.
    Filter,
    /// What that filter did: `local_reply` or `failed`.
    FilterAction,
}

impl Variable {
    /// Every variable, in the order the JSON format writes them.
    pub const ALL: [Variable; 21] = [
        Variable::Time,
        Variable::TimeLocal,
        Variable::RemoteAddr,
        Variable::RemotePort,
        Variable::ClientAddr,
        Variable::Method,
        Variable::Host,
        Variable::Path,
        Variable::Protocol,
        Variable::Status,
        Variable::BytesIn,
        Variable::BytesOut,
        Variable::DurationMs,
        Variable::Upstream,
        Variable::UpstreamMs,
        Variable::Route,
        Variable::RequestId,
        Variable::UserAgent,
        Variable::Referer,
        Variable::Filter,
        Variable::FilterAction,
    ];

    /// Its name in templates (after `$`) and in JSON lines.
    pub fn name(self) -> &'static str {
        match self {
            Variable::Time => "time",
            Variable::TimeLocal => "time_local",
            Variable::RemoteAddr => "remote_addr",
            Variable::RemotePort => "remote_port",
            Variable::ClientAddr => "client_addr",
            Variable::Method => "method",
            Variable::Path => "path",
            Variable::Host => "host",
            Variable::Protocol => "protocol",
            Variable::Status => "status",
            Variable::BytesIn => "bytes_in",
            Variable::BytesOut => "bytes_out",
            Variable::DurationMs => "duration_ms",
            Variable::Upstream => "upstream",
            Variable::UpstreamMs => "upstream_ms",
            Variable::Route => "route",
            Variable::RequestId => "request_id",
            Variable::UserAgent => "user_agent",
            Variable::Referer => "referer",
            Variable::Filter => "filter",
            Variable::FilterAction => "filter_action",
        }
    }

    fn from_name(name: &str) -> Option<Variable> {
        Variable::ALL.into_iter().find(|v| v.name() == name)
    }
}

/// A piece of a template line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Var(Variable),
}

/// How a line looks (`format:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// `json` (the default): one JSON object per line, every variable a field (`null` when
    /// unknown).
    Json,
    /// `combined`: Apache's and nginx's combined format.
    Combined,
    /// Any other value: a template, `$name` or `${name}` replaced by the variable (`-` when
    /// unknown), any other text kept; `$$` is a `$`.
    Template(Vec<Piece>),
}

/// The access log (`access_log:`). Absent: no access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    /// `path:`; default stdout.
    pub path: AccessLogPath,
    /// `format:`; default JSON.
    pub format: AccessLogFormat,
}

/// Checks `access_log:`; `None` when something is wrong (reported).
pub(crate) fn validate(
    raw: RawAccessLog,
    base: &Path,
    report: &mut Report<'_>,
) -> Option<AccessLog> {
    let path = match raw.path.as_deref() {
        None | Some("stdout") => Some(AccessLogPath::Stdout),
        Some("stderr") => Some(AccessLogPath::Stderr),
        Some("") => {
            report.add("access_log.path", Problem::EmptyPath("access_log.path"));
            None
        }
        Some(file) => {
            let path = base.join(file);
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            if path.is_dir() {
                report.add("access_log.path", Problem::LogPathIsDir(path));
                None
            } else if dir.is_some_and(|d| !d.is_dir()) {
                report.add("access_log.path", Problem::LogDirMissing(path));
                None
            } else {
                Some(AccessLogPath::File(path))
            }
        }
    };
    let format = match raw.format.as_deref() {
        None | Some("json") => Some(AccessLogFormat::Json),
        Some("combined") => Some(AccessLogFormat::Combined),
        Some(text) => match template(text) {
            Ok(pieces) => Some(AccessLogFormat::Template(pieces)),
            Err(reason) => {
                report.add("access_log.format", Problem::Template(reason));
                None
            }
        },
    };
    Some(AccessLog {
        path: path?,
        format: format?,
    })
}

/// Parses a template into literal text and variables.
pub(crate) fn template(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        literal.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            literal.push('$');
            rest = after;
            continue;
        }
        let (name, after) = if let Some(inner) = rest.strip_prefix('{') {
            let end = inner
                .find('}')
                .ok_or_else(|| "a \"${\" is not closed by \"}\"".to_owned())?;
            (&inner[..end], &inner[end + 1..])
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        if name.is_empty() {
            return Err(
                "a \"$\" is not followed by a variable name (write \"$$\" for a \"$\")".into(),
            );
        }
        let var = Variable::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = Variable::ALL.iter().map(|v| v.name()).collect();
            format!("unknown variable ${name} (known: {})", known.join(", "))
        })?;
        if !literal.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut literal)));
        }
        pieces.push(Piece::Var(var));
        rest = after;
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    if !pieces.iter().any(|p| matches!(p, Piece::Var(_))) {
        return Err("a template needs at least one $variable (or use json or combined)".into());
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_splits_into_text_and_variables() {
        let pieces = template("$remote_addr ${status}x $$5 [$time_local]").unwrap();
        assert_eq!(
            pieces,
            [
                Piece::Var(Variable::RemoteAddr),
                Piece::Text(" ".into()),
                Piece::Var(Variable::Status),
                Piece::Text("x $5 [".into()),
                Piece::Var(Variable::TimeLocal),
                Piece::Text("]".into()),
            ]
        );
    }

    #[test]
    fn bad_templates_say_why() {
        assert!(
            template("$nope")
                .unwrap_err()
                .starts_with("unknown variable $nope (known: time,")
        );
        assert!(template("${status").unwrap_err().contains("not closed"));
        assert!(template("a $ b").unwrap_err().contains("not followed"));
        assert!(template("plain text").unwrap_err().contains("at least one"));
    }

    #[test]
    fn every_variable_has_a_distinct_name() {
        for v in Variable::ALL {
            assert_eq!(Variable::from_name(v.name()), Some(v));
        }
    }

    const HEAD: &str =
        "listen: 127.0.0.1:1\nupstreams: {a: {endpoints: [\"a:1\"]}}\nroutes: [{upstream: a}]\n";

    #[test]
    fn absent_is_no_log_and_empty_is_json_on_stdout() {
        assert_eq!(crate::testing::ok(HEAD).access_log, None);
        let log = crate::testing::ok(&format!("{HEAD}access_log: {{}}\n")).access_log;
        assert_eq!(
            log,
            Some(AccessLog {
                path: AccessLogPath::Stdout,
                format: AccessLogFormat::Json
            })
        );
    }

    #[test]
    fn paths_and_formats_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wasmgate.yaml");
        let text = format!("{HEAD}access_log: {{path: logs/access.log, format: combined}}\n");
        std::fs::create_dir(dir.path().join("logs")).unwrap();
        std::fs::write(&file, &text).unwrap();
        let c = crate::load(&file, &crate::testing::opts()).unwrap();
        let log = c.access_log.unwrap();
        assert_eq!(
            log.path,
            AccessLogPath::File(dir.path().join("logs/access.log"))
        );
        assert_eq!(log.format, AccessLogFormat::Combined);
        let t = crate::testing::ok(&format!(
            "{HEAD}access_log: {{path: stderr, format: \"$status $$\"}}\n"
        ))
        .access_log
        .unwrap();
        assert_eq!(t.path, AccessLogPath::Stderr);
        assert_eq!(
            t.format,
            AccessLogFormat::Template(vec![Piece::Var(Variable::Status), Piece::Text(" $".into())])
        );
    }

    #[test]
    fn bad_values_are_errors_at_their_keys() {
        let text = format!(
            "{HEAD}access_log:\n  path: no/such/dir/access.log\n  format: \"$remote_addr $code\"\n"
        );
        let all = crate::testing::errors(&text);
        assert_eq!(all.len(), 2, "{all:#?}");
        assert_eq!(
            all[0],
            "wasmgate.yaml:5:3: access_log.path: the directory of access_log.path does not exist: \
             no/such/dir/access.log"
        );
        assert!(
            all[1].starts_with(
                "wasmgate.yaml:6:3: access_log.format: invalid access log template: \
                 unknown variable $code (known: time, time_local,"
            ),
            "{}",
            all[1]
        );
        let e = crate::testing::error(&format!("{HEAD}access_log: {{path: \"\"}}\n"));
        assert!(e.contains("access_log.path is empty"), "{e}");
        let e = crate::testing::error(&format!("{HEAD}access_log: {{path: .}}\n"));
        assert!(e.contains("access_log.path is a directory"), "{e}");
        let e = crate::testing::error(&format!("{HEAD}access_log: {{file: x}}\n"));
        assert!(e.contains("unknown field `file`"), "{e}");
    }
}
