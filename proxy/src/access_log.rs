//! The access log (`access_log:`): one line per request, formatted on the worker that served
//! it and written by a thread of its own, so that a slow disk or a blocked stdout never holds
//! a request. The worker hands the line over through a bounded channel; when the channel is
//! full the line is dropped and counted (`wasmgate_access_log_dropped_total`).
//!
//! The writer opens the target of the newest generation whose lines it has seen: a reload
//! that changes `path` moves the log at its first line, and any reload that loads a new
//! generation reopens the file (so does `SIGUSR1`), for log rotation. Lines of requests still
//! finishing on an older generation go to the current file, in their own format.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

use metrics::Counter;
use pingora::prelude::*;
use pingora::proxy::Session;
use wasmgate_abi::ChainStream;
use wasmgate_config::{AccessLogFormat, AccessLogPath, Piece, Variable};

use crate::forwarding::Forwarded;
use crate::generation::Generation;

/// Lines waiting for the writer at most; past it lines are dropped.
const CHANNEL_LINES: usize = 8192;
/// Lines written between two flushes at most.
const BATCH_LINES: usize = 256;
/// How long the writer waits before it retries a file it could not open.
const REOPEN_RETRY: Duration = Duration::from_secs(5);

/// What the proxy learns about a request as it goes, for its log line.
#[derive(Debug, Default)]
pub struct Facts {
    pub forwarded: Forwarded,
    /// The upstream endpoint connected to (the last one, after retries).
    pub upstream: Option<SocketAddr>,
    /// When the upstream was first chosen.
    pub upstream_chosen: Option<Instant>,
    /// From then to the upstream's response head.
    pub upstream_time: Option<Duration>,
}

impl Facts {
    /// The upstream was chosen (`upstream_peer`); a retry keeps the first time.
    pub(crate) fn upstream_chosen(&mut self) {
        self.upstream_chosen.get_or_insert_with(Instant::now);
    }

    /// The upstream's response head arrived.
    pub(crate) fn upstream_answered(&mut self) {
        self.upstream_time = self.upstream_chosen.map(|t| t.elapsed());
    }
}

/// The route's name in logs: its `name:` (default `route-<n>`).
pub(crate) fn route_label(generation: &Generation, index: usize) -> String {
    generation
        .config
        .routes
        .get(index)
        .map_or_else(|| index.to_string(), |r| r.name.clone())
}

/// Whether `e` is the client going away (closing or resetting its connection) rather than
/// a fault: nginx's 499, and no error log.
pub(crate) fn client_left(e: &Error) -> bool {
    *e.esource() == ErrorSource::Downstream
        && matches!(
            e.etype(),
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
        )
}

/// One request's line, before formatting.
#[derive(Debug)]
struct Entry<'a> {
    time: SystemTime,
    remote: Option<SocketAddr>,
    client_addr: Option<IpAddr>,
    method: &'a str,
    host: Option<&'a str>,
    path: String,
    protocol: &'static str,
    status: u16,
    bytes_in: usize,
    bytes_out: usize,
    duration: Duration,
    upstream: Option<SocketAddr>,
    upstream_time: Option<Duration>,
    route: Option<String>,
    request_id: Option<&'a str>,
    user_agent: Option<&'a str>,
    referer: Option<&'a str>,
    filter: Option<(&'a str, &'static str)>,
}

/// A value of a variable.
enum Value<'a> {
    Text(std::borrow::Cow<'a, str>),
    Int(u64),
    Ms(Duration),
    None,
}

fn text(s: Option<&str>) -> Value<'_> {
    s.map_or(Value::None, |s| Value::Text(std::borrow::Cow::Borrowed(s)))
}

impl Entry<'_> {
    fn value(&self, v: Variable) -> Value<'_> {
        use std::borrow::Cow::{Borrowed, Owned};
        match v {
            Variable::Time => {
                let t = chrono::DateTime::<chrono::Utc>::from(self.time);
                Value::Text(Owned(
                    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                ))
            }
            Variable::TimeLocal => {
                let t = chrono::DateTime::<chrono::Utc>::from(self.time);
                Value::Text(Owned(t.format("%d/%b/%Y:%H:%M:%S %z").to_string()))
            }
            Variable::RemoteAddr => self.remote.map_or(Value::None, |a| {
                Value::Text(Owned(a.ip().to_canonical().to_string()))
            }),
            Variable::RemotePort => self
                .remote
                .map_or(Value::None, |a| Value::Int(u64::from(a.port()))),
            Variable::ClientAddr => self
                .client_addr
                .map_or(Value::None, |a| Value::Text(Owned(a.to_string()))),
            Variable::Method => Value::Text(Borrowed(self.method)),
            Variable::Host => text(self.host),
            Variable::Path => Value::Text(Borrowed(&self.path)),
            Variable::Protocol => Value::Text(Borrowed(self.protocol)),
            Variable::Status => Value::Int(u64::from(self.status)),
            Variable::BytesIn => Value::Int(self.bytes_in as u64),
            Variable::BytesOut => Value::Int(self.bytes_out as u64),
            Variable::DurationMs => Value::Ms(self.duration),
            Variable::Upstream => self
                .upstream
                .map_or(Value::None, |a| Value::Text(Owned(a.to_string()))),
            Variable::UpstreamMs => self.upstream_time.map_or(Value::None, Value::Ms),
            Variable::Route => text(self.route.as_deref()),
            Variable::RequestId => text(self.request_id),
            Variable::UserAgent => text(self.user_agent),
            Variable::Referer => text(self.referer),
            Variable::Filter => text(self.filter.map(|(name, _)| name)),
            Variable::FilterAction => text(self.filter.map(|(_, action)| action)),
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// The line in `format`, without its newline.
fn format_line(format: &AccessLogFormat, entry: &Entry<'_>) -> String {
    let mut out = String::with_capacity(256);
    match format {
        AccessLogFormat::Json => {
            out.push('{');
            for (i, v) in Variable::ALL.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "\"{}\":", v.name());
                match entry.value(v) {
                    Value::Text(s) => {
                        out.push_str(&serde_json::Value::from(s.as_ref()).to_string());
                    }
                    Value::Int(n) => {
                        let _ = write!(out, "{n}");
                    }
                    Value::Ms(d) => out.push_str(&ms(d)),
                    Value::None => out.push_str("null"),
                }
            }
            out.push('}');
        }
        AccessLogFormat::Combined => {
            // $remote_addr - - [$time_local] "$method $path $protocol" $status $bytes_out
            // "$referer" "$user_agent", as nginx's `combined`.
            let v = |var| plain(entry.value(var));
            let _ = write!(
                out,
                "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\"",
                v(Variable::RemoteAddr),
                v(Variable::TimeLocal),
                v(Variable::Method),
                v(Variable::Path),
                v(Variable::Protocol),
                v(Variable::Status),
                v(Variable::BytesOut),
                v(Variable::Referer),
                v(Variable::UserAgent),
            );
        }
        AccessLogFormat::Template(pieces) => {
            for piece in pieces {
                match piece {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Var(var) => out.push_str(&plain(entry.value(*var))),
                }
            }
        }
    }
    out
}

/// A value in a text line: `-` when unknown; `"`, `\` and bytes outside printable ASCII as
/// `\xHH`, as nginx escapes, so that a client cannot forge or break lines.
fn plain(value: Value<'_>) -> String {
    match value {
        Value::Text(s) => {
            let mut out = String::with_capacity(s.len());
            for b in s.bytes() {
                if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
                    out.push(char::from(b));
                } else {
                    let _ = write!(out, "\\x{b:02X}");
                }
            }
            out
        }
        Value::Int(n) => n.to_string(),
        Value::Ms(d) => ms(d),
        Value::None => "-".to_owned(),
    }
}

/// Logs one finished request, if the generation it ran on has an access log.
#[allow(clippy::too_many_arguments)]
pub(crate) fn log(
    session: &Session,
    generation: &Generation,
    route: Option<usize>,
    chain: Option<&ChainStream>,
    status: u16,
    started: Instant,
    facts: &Facts,
) {
    let Some(settings) = &generation.config.access_log else {
        return;
    };
    let req = session.req_header();
    let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
    let filter = chain.and_then(|c| {
        c.replied_by()
            .map(|f| (f, "local_reply"))
            .or_else(|| c.failed_by().map(|f| (f, "failed")))
    });
    let protocol = if session.is_http2() {
        "HTTP/2"
    } else if req.version == http::Version::HTTP_10 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    let entry = Entry {
        time: SystemTime::now(),
        remote: session.client_addr().and_then(|a| a.as_inet()).copied(),
        client_addr: facts.forwarded.client_addr,
        method: req.method.as_str(),
        host: req
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| header("host")),
        path: String::from_utf8_lossy(req.raw_path()).into_owned(),
        protocol,
        status,
        bytes_in: session.body_bytes_read(),
        bytes_out: session.body_bytes_sent(),
        duration: started.elapsed(),
        upstream: facts.upstream,
        upstream_time: facts.upstream_time,
        route: route.map(|i| route_label(generation, i)),
        request_id: facts
            .forwarded
            .request_id
            .as_ref()
            .and_then(|v| v.to_str().ok()),
        user_agent: header("user-agent"),
        referer: header("referer"),
        filter,
    };
    let line = format_line(&settings.format, &entry);
    writer().send(Line {
        generation: generation.id,
        target: settings.path.clone(),
        text: line,
    });
}

/// A formatted line on its way to the writer.
#[derive(Debug)]
struct Line {
    generation: u64,
    target: AccessLogPath,
    text: String,
}

/// The channel to the writer thread, started with the first line.
#[derive(Debug)]
struct Writer {
    tx: SyncSender<Line>,
    dropped_full: Counter,
}

/// Asks the writer to reopen its file (`SIGUSR1`).
static REOPEN: AtomicBool = AtomicBool::new(false);

fn dropped(reason: &'static str) -> Counter {
    metrics::counter!("wasmgate_access_log_dropped_total", "reason" => reason)
}

fn writer() -> &'static Writer {
    static WRITER: OnceLock<Writer> = OnceLock::new();
    WRITER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL_LINES);
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx));
        if let Err(e) = spawned {
            tracing::error!("cannot start the access log writer, lines are dropped: {e}");
        }
        Writer {
            tx,
            dropped_full: dropped("full"),
        }
    })
}

impl Writer {
    fn send(&self, line: Line) {
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped_full.increment(1);
            }
        }
    }
}

/// Where the writer writes.
enum Sink {
    Stdout,
    Stderr,
    File(std::io::BufWriter<std::fs::File>),
}

impl Sink {
    fn open(target: &AccessLogPath) -> std::io::Result<Sink> {
        Ok(match target {
            AccessLogPath::Stdout => Sink::Stdout,
            AccessLogPath::Stderr => Sink::Stderr,
            AccessLogPath::File(path) => Sink::File(std::io::BufWriter::with_capacity(
                64 * 1024,
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
        })
    }

    fn write(&mut self, text: &str) -> std::io::Result<()> {
        let line = |w: &mut dyn std::io::Write| {
            w.write_all(text.as_bytes())?;
            w.write_all(b"\n")
        };
        match self {
            Sink::Stdout => line(&mut std::io::stdout().lock()),
            Sink::Stderr => line(&mut std::io::stderr().lock()),
            Sink::File(f) => line(f),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout => std::io::stdout().flush(),
            Sink::Stderr => std::io::stderr().flush(),
            Sink::File(f) => f.flush(),
        }
    }
}

/// The writer's state: the file it writes to and the generation that chose it.
struct Output {
    sink: Option<Sink>,
    target: Option<AccessLogPath>,
    generation: u64,
    failed_at: Option<Instant>,
    dropped_error: Counter,
}

impl Output {
    fn reopen(&mut self) {
        if let Some(mut old) = self.sink.take() {
            let _ = old.flush();
        }
        let Some(target) = &self.target else { return };
        match Sink::open(target) {
            Ok(sink) => {
                self.sink = Some(sink);
                self.failed_at = None;
            }
            Err(e) => {
                self.failed_at = Some(Instant::now());
                if let AccessLogPath::File(path) = target {
                    tracing::error!(path = %path.display(), "cannot open the access log: {e}");
                }
            }
        }
    }

    fn write(&mut self, line: Line) {
        if line.generation > self.generation || self.target.is_none() {
            self.generation = line.generation;
            self.target = Some(line.target);
            self.reopen();
        } else if self.sink.is_none() && self.failed_at.is_some_and(|t| t.elapsed() > REOPEN_RETRY)
        {
            self.reopen();
        }
        let written = match &mut self.sink {
            Some(sink) => sink.write(&line.text),
            None => Err(std::io::Error::other("not open")),
        };
        if written.is_err() {
            self.dropped_error.increment(1);
        }
    }
}

fn write_lines(rx: Receiver<Line>) {
    let mut out = Output {
        sink: None,
        target: None,
        generation: 0,
        failed_at: None,
        dropped_error: dropped("error"),
    };
    loop {
        let first = rx.recv_timeout(Duration::from_millis(250));
        if REOPEN.swap(false, Ordering::Relaxed) {
            out.reopen();
        }
        match first {
            Ok(line) => out.write(line),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        }
        for line in rx.try_iter().take(BATCH_LINES) {
            out.write(line);
        }
        if let Some(sink) = &mut out.sink
            && let Err(e) = sink.flush()
        {
            tracing::debug!("access log flush failed: {e}");
        }
    }
}

/// Reopens the access log file on `SIGUSR1`, from now on (the default action of `SIGUSR1`
/// would end the process).
pub fn catch_sigusr1() -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot install the SIGUSR1 handler: {e}"))?;
    let mut signals = runtime
        .block_on(async {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        })
        .map_err(|e| format!("cannot install the SIGUSR1 handler: {e}"))?;
    std::thread::Builder::new()
        .name("sigusr1".into())
        .spawn(move || {
            runtime.block_on(async {
                while signals.recv().await.is_some() {
                    tracing::info!("SIGUSR1: reopening the access log");
                    REOPEN.store(true, Ordering::Relaxed);
                }
            });
        })
        .map(drop)
        .map_err(|e| format!("cannot start the SIGUSR1 thread: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            remote: Some("127.0.0.1:5000".parse().unwrap()),
            client_addr: Some("192.0.2.1".parse().unwrap()),
            method: "GET",
            host: Some("example.com"),
            path: "/a?b=\"c\"".into(),
            protocol: "HTTP/1.1",
            status: 200,
            bytes_in: 3,
            bytes_out: 10,
            duration: Duration::from_micros(1500),
            upstream: None,
            upstream_time: None,
            route: Some("0".into()),
            request_id: Some("id-1"),
            user_agent: Some("ua\n1"),
            referer: None,
            filter: Some(("auth", "local_reply")),
        }
    }

    #[test]
    fn json_lines_carry_every_variable() {
        let line = format_line(&AccessLogFormat::Json, &entry());
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v.as_object().unwrap().len(), Variable::ALL.len());
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["time_local"], "14/Nov/2023:22:13:20 +0000");
        assert_eq!(v["path"], "/a?b=\"c\"");
        assert_eq!(v["user_agent"], "ua\n1");
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["upstream"], serde_json::Value::Null);
        assert_eq!(v["filter"], "auth");
        assert_eq!(v["remote_port"], 5000);
    }

    #[test]
    fn text_lines_escape_what_could_forge_a_line() {
        let line = format_line(&AccessLogFormat::Combined, &entry());
        assert_eq!(
            line,
            "127.0.0.1 - - [14/Nov/2023:22:13:20 +0000] \"GET /a?b=\\x22c\\x22 HTTP/1.1\" \
             200 10 \"-\" \"ua\\x0A1\""
        );
        let pieces = vec![
            Piece::Var(Variable::Status),
            Piece::Text(" ".into()),
            Piece::Var(Variable::UpstreamMs),
            Piece::Text(" ".into()),
            Piece::Var(Variable::DurationMs),
        ];
        let line = format_line(&AccessLogFormat::Template(pieces), &entry());
        assert_eq!(line, "200 - 1.500");
    }
}
