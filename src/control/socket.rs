//! The control socket: `mtactl queue flush|delete|hold|release` talk to the running daemon.
//!
//! A unix stream socket at `server { control-socket "PATH" }` (default `control.sock` in
//! the spool directory), created mode 0600: whoever can connect to it administers the
//! queue. The protocol is one JSON [`Request`] per line, answered by one JSON
//! [`Response`] per line; a connection may send several. A line longer than
//! [`MAX_REQUEST_LINE`] is answered with an error and the connection is closed.
//!
//! ```text
//! > {"queue":"hold","ids":["0000000065A1B2C3"]}
//! < {"ok":true,"done":["0000000065A1B2C3"],"missing":[]}
//! > {"queue":"delete"}
//! < {"ok":false,"error":"delete needs ids, or \"all\":true to delete every message","done":[],"missing":[]}
//! ```
//!
//! `mtactl reload` sends `{"reload":true}` and gets [`ReloadResponse`]:
//!
//! ```text
//! > {"reload":true}
//! < {"ok":true,"needs_restart":["delivery"]}
//! < {"ok":false,"errors":"× undefined domain set `rely` ..."}
//! ```
//!
//! A configuration `mtactl reload` refused itself (it never sends one that does not
//! load) is still a refused reload: `{"reload_refused":3}` (the number of errors) makes
//! the daemon count and log it as it counts and logs a refused `SIGHUP`, and is
//! answered `{"ok":true}`.
//!
//! `mtactl status` sends `{"status":true}` and gets a [`Status`] (see
//! [`super::status`]).
//!
//! `mtactl tls-report send [--now]` sends `{"tls_report":"send"}` (`"now":true`: the
//! open TLS reporting period is closed first): the reports of every closed period are
//! queued; the answer is a
//! [`TlsReportResponse`] (`{"ok":true,"lines":["example.com: queued ID to ADDR"]}`).
//!
//! The daemon side is [`ControlSocket`] (bind, then serve); the scheduler is reached
//! through [`DeliveryControl`], the reloader through [`ControlSocket::with_reload`], the
//! status through [`ControlSocket::with_status`]. The client side is [`request`],
//! [`reload`] and [`status`], blocking, for `mtactl`.

use std::collections::BTreeSet;
use std::io::{self, BufRead, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::status::{Status, StatusRequest};
use crate::queue::{QueueId, Spool, SpoolError};

/// Longest request line accepted, newline excluded (1 MiB: some 50,000 ids).
pub const MAX_REQUEST_LINE: usize = 1 << 20;

/// Spool writes in flight at once for one request: enough for the committer to group
/// them into few fsyncs, few enough that a `delete ALL` does not monopolize it.
const CONCURRENT_WRITES: usize = 256;

/// What the scheduler provides to the control socket.
pub trait DeliveryControl: Send + Sync + 'static {
    /// Attempt these messages now, ignoring their backoff (flush, and after release).
    fn flush(&self, ids: &[QueueId]);
    /// Stop tracking this message (deleted, or put on hold); an attempt already running
    /// may finish (its status update for a deleted message then fails with NotFound).
    fn forget(&self, id: QueueId);
    /// `mtactl queue evacuate`: hand every message over to `to` (another node). A
    /// delivery side that cannot refuses (the default).
    fn evacuate(&self, to: crate::config::route::Transport) -> Result<(), String> {
        let _ = to;
        Err("this daemon cannot evacuate its queue".to_owned())
    }
}

/// The scheduler is what the socket flushes and forgets through.
impl DeliveryControl for crate::delivery::scheduler::SchedulerHandle {
    fn flush(&self, ids: &[QueueId]) {
        crate::delivery::scheduler::SchedulerHandle::flush(self, ids);
    }

    fn forget(&self, id: QueueId) {
        crate::delivery::scheduler::SchedulerHandle::forget(self, id);
    }

    fn evacuate(&self, to: crate::config::route::Transport) -> Result<(), String> {
        crate::delivery::scheduler::SchedulerHandle::evacuate(self, to);
        Ok(())
    }
}

/// `{"evacuate":"smtp:[10.0.0.12]:25"}`: `mtactl queue evacuate --to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvacuateRequest {
    pub evacuate: String,
}

/// Asks the daemon at `path` to hand its queue over to `to` (an `smtp:` transport).
pub fn evacuate(path: &Path, to: &str) -> Result<Response, RequestError> {
    exchange(
        path,
        &EvacuateRequest {
            evacuate: to.to_owned(),
        },
    )
}

/// What the daemon does with an [`EvacuateRequest`]: an SMTP next hop, or a refusal.
fn evacuate_to(req: &EvacuateRequest, delivery: &dyn DeliveryControl) -> Response {
    use crate::config::route::Transport;
    match Transport::parse(&req.evacuate) {
        Ok(to @ Transport::Smtp(_)) => match delivery.evacuate(to) {
            Ok(()) => Response::default(),
            Err(e) => Response::error(e),
        },
        Ok(_) => Response::error(format!(
            "evacuate to an SMTP next hop (smtp:[host]:port), not {:?}",
            req.evacuate
        )),
        Err(e) => Response::error(format!("evacuate: {e}")),
    }
}

/// What a request does to the messages it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueAction {
    /// Attempt now, ignoring the backoff; held messages are skipped.
    Flush,
    /// Remove from the queue (no bounce), like `postsuper -d`.
    Delete,
    /// Keep in the queue but do not deliver, like `postsuper -h`.
    Hold,
    /// Undo hold and attempt now, like `postsuper -H`.
    Release,
}

impl QueueAction {
    pub fn name(self) -> &'static str {
        match self {
            QueueAction::Flush => "flush",
            QueueAction::Delete => "delete",
            QueueAction::Hold => "hold",
            QueueAction::Release => "release",
        }
    }
}

/// One request line: `{"queue":"hold","ids":["0000000065A1B2C3"]}`.
///
/// No ids means every message, except for `delete`, which needs `"all":true` instead so
/// that a forgotten argument cannot empty the queue. Unknown fields are refused: a newer
/// client's option must not be silently ignored by an older daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub queue: QueueAction,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<QueueId>,
    /// Every message; may not be combined with `ids`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

/// One response line. On the wire: `{"ok":true,"done":[...],"missing":[...]}`, plus
/// `"held":[...]` when a flush skipped held messages; on failure `"ok":false` and
/// `"error"`, with `done`/`missing` saying what happened before the failure.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "WireResponse", from = "WireResponse")]
pub struct Response {
    /// Messages the action applied to, sorted. For hold and release this includes
    /// messages that were already in the requested state.
    pub done: Vec<QueueId>,
    /// Ids asked for that are not in the queue, sorted.
    pub missing: Vec<QueueId>,
    /// Flush only: queued but on hold, so not flushed (release them instead), sorted.
    pub held: Vec<QueueId>,
    /// Why the request was refused or stopped part way.
    pub error: Option<String>,
}

impl Response {
    pub fn error(message: impl Into<String>) -> Response {
        Response {
            error: Some(message.into()),
            ..Response::default()
        }
    }

    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }
}

#[derive(Serialize, Deserialize)]
struct WireResponse {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default)]
    done: Vec<QueueId>,
    #[serde(default)]
    missing: Vec<QueueId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    held: Vec<QueueId>,
}

impl From<Response> for WireResponse {
    fn from(r: Response) -> Self {
        WireResponse {
            ok: r.error.is_none(),
            error: r.error,
            done: r.done,
            missing: r.missing,
            held: r.held,
        }
    }
}

impl From<WireResponse> for Response {
    fn from(w: WireResponse) -> Self {
        Response {
            done: w.done,
            missing: w.missing,
            held: w.held,
            error: match (w.ok, w.error) {
                (true, _) => None,
                (false, e) => Some(e.unwrap_or_else(|| "unspecified error".to_owned())),
            },
        }
    }
}

/// `{"reload":true}`: compile the configuration anew and swap the policy in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    pub reload: bool,
}

/// `{"reload_refused":N}`: `mtactl reload` refused the configuration (N errors).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadRefusedRequest {
    pub reload_refused: usize,
}

/// The answer to a [`ReloadRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadResponse {
    pub ok: bool,
    /// The configuration errors, rendered with file:line:col, when `ok` is false.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub errors: String,
    /// Blocks that changed but take effect at the next restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs_restart: Vec<String>,
}

/// What answers a reload request (blocking: run on the blocking pool).
pub type ReloadFn = Arc<dyn Fn() -> ReloadResponse + Send + Sync>;

/// What answers a status request (quick: run on the runtime).
pub type StatusFn = Arc<dyn Fn() -> Status + Send + Sync>;

/// `{"tls_report":"send"}`: close the TLS reporting period now and queue the reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsReportRequest {
    pub tls_report: TlsReportAction,
    /// Close the open period first, whatever its age.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub now: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsReportAction {
    Send,
}

/// The answer to a [`TlsReportRequest`]: what became of each domain's report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsReportResponse {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    #[serde(default)]
    pub lines: Vec<String>,
}

/// Asks the daemon at `path` to send its TLS reports (`now`: the open period's too).
pub fn tls_report_send(path: &Path, now: bool) -> Result<TlsReportResponse, RequestError> {
    exchange(
        path,
        &TlsReportRequest {
            tls_report: TlsReportAction::Send,
            now,
        },
    )
}

/// Why [`request`] got no response.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("mtad is not running (no control socket at {})", path.display())]
    NotRunning { path: PathBuf },
    #[error("control socket {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("control socket {}: bad response from mtad: {reason}", path.display())]
    BadResponse { path: PathBuf, reason: String },
}

/// Sends one request to the daemon at `path` and waits for its response (blocking; no
/// timeout, since a `delete ALL` on a large queue takes as long as it takes).
pub fn request(path: &Path, req: &Request) -> Result<Response, RequestError> {
    exchange(path, req)
}

/// Asks the daemon at `path` to reload its policy (blocking, until it has).
pub fn reload(path: &Path) -> Result<ReloadResponse, RequestError> {
    exchange(path, &ReloadRequest { reload: true })
}

/// Tells the daemon at `path` that `mtactl reload` refused a configuration with
/// `errors` errors (blocking).
pub fn reload_refused(path: &Path, errors: usize) -> Result<ReloadResponse, RequestError> {
    exchange(
        path,
        &ReloadRefusedRequest {
            reload_refused: errors,
        },
    )
}

/// Asks the daemon at `path` how it is.
pub fn status(path: &Path) -> Result<Status, RequestError> {
    exchange(path, &StatusRequest { status: true })
}

fn exchange<Q: Serialize, A: serde::de::DeserializeOwned>(
    path: &Path,
    req: &Q,
) -> Result<A, RequestError> {
    let io_err = |source| RequestError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = match std::os::unix::net::UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(RequestError::NotRunning {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(io_err(e)),
    };
    let mut line = serde_json::to_vec(req).map_err(|e| io_err(io::Error::other(e)))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io_err)?;
    let mut reader = io::BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer).map_err(io_err)?;
    if answer.is_empty() {
        return Err(RequestError::BadResponse {
            path: path.to_path_buf(),
            reason: "the connection was closed without a response".to_owned(),
        });
    }
    serde_json::from_str(&answer).map_err(|e| RequestError::BadResponse {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// A bound control socket, not yet serving. Binding first lets the daemon fail at start
/// (before it says it is up) when another daemon owns the path.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file we created: on shutdown it is removed only if
    /// it is still ours.
    file: (u64, u64),
    reload: Option<ReloadFn>,
    status: Option<StatusFn>,
    tls_report: Option<Arc<crate::delivery::tls_rpt::report::Reporter>>,
}

fn bind_error(path: &Path, kind: io::ErrorKind, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(kind, format!("control socket {}: {what}", path.display()))
}

impl std::fmt::Debug for ControlSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlSocket")
            .field("path", &self.path)
            .field("reload", &self.reload.is_some())
            .field("status", &self.status.is_some())
            .finish_non_exhaustive()
    }
}

impl ControlSocket {
    /// Binds `path` (mode 0600). A socket file left by a daemon that died is replaced,
    /// but only if nothing answers on it; if another daemon answers, or `path` is not a
    /// socket, this fails. Must be called from within a tokio runtime.
    pub fn bind(path: &Path) -> io::Result<ControlSocket> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(bind_error(path, e.kind(), e)),
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(bind_error(
                    path,
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a socket; not replacing it",
                ));
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(bind_error(
                        path,
                        io::ErrorKind::AddrInUse,
                        "another mtad is answering on it",
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    match std::fs::remove_file(path) {
                        Ok(()) => info!(path = %path.display(), "replaced a stale control socket"),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(bind_error(path, e.kind(), e)),
                    }
                }
                Err(e) => return Err(bind_error(path, e.kind(), e)),
            },
        }
        let listener = UnixListener::bind(path).map_err(|e| bind_error(path, e.kind(), e))?;
        let restrict = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::symlink_metadata(path));
        let meta = match restrict {
            Ok(meta) => meta,
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(bind_error(path, e.kind(), e));
            }
        };
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
            file: (meta.dev(), meta.ino()),
            reload: None,
            status: None,
            tls_report: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers `{"reload":true}` with `reload` (without it: an error saying reloads
    /// are not available here).
    pub fn with_reload(mut self, reload: ReloadFn) -> Self {
        self.reload = Some(reload);
        self
    }

    /// Answers `{"status":true}` with `status` (without it: an error saying status is
    /// not available here).
    pub fn with_status(mut self, status: StatusFn) -> Self {
        self.status = Some(status);
        self
    }

    /// Answers `{"tls_report":"send"}` with `reporter`.
    pub fn with_tls_report(
        mut self,
        reporter: Arc<crate::delivery::tls_rpt::report::Reporter>,
    ) -> Self {
        self.tls_report = Some(reporter);
        self
    }

    /// Answers requests until `shutdown` changes (or its sender is dropped), then removes
    /// the socket file and waits for connections to finish the request they are running.
    pub async fn serve(
        self,
        spool: Spool,
        delivery: Arc<dyn DeliveryControl>,
        mut shutdown: watch::Receiver<bool>,
    ) -> io::Result<()> {
        info!(path = %self.path.display(), "control socket ready");
        let mut connections = JoinSet::new();
        if !*shutdown.borrow_and_update() {
            loop {
                tokio::select! {
                    _ = shutdown.changed() => break,
                    accepted = self.listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            connections.spawn(connection(
                                stream,
                                spool.clone(),
                                Arc::clone(&delivery),
                                self.reload.clone(),
                                self.status.clone(),
                                self.tls_report.clone(),
                                shutdown.clone(),
                            ));
                        }
                        Err(e) => {
                            // EMFILE and the like: wait instead of spinning.
                            warn!(path = %self.path.display(), error = %e, "control socket: accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        }
        let ControlSocket {
            listener,
            path,
            file,
            reload: _,
            status: _,
            tls_report: _,
        } = self;
        drop(listener);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if (meta.dev(), meta.ino()) == file => {
                if let Err(e) = std::fs::remove_file(&path) {
                    warn!(path = %path.display(), error = %e, "cannot remove the control socket");
                }
            }
            _ => debug!(path = %path.display(), "control socket file replaced or gone; left alone"),
        }
        while connections.join_next().await.is_some() {}
        Ok(())
    }
}

/// Binds `path` and serves until `shutdown`: [`ControlSocket::bind`], then
/// [`ControlSocket::serve`].
pub async fn serve_control(
    path: PathBuf,
    spool: Spool,
    delivery: Arc<dyn DeliveryControl>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    ControlSocket::bind(&path)?
        .serve(spool, delivery, shutdown)
        .await
}

enum Line {
    Complete,
    TooLong,
    Eof,
}

/// Reads one line into `buf` (without its `\n` or `\r\n`), at most `MAX_REQUEST_LINE` bytes.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> io::Result<Line> {
    buf.clear();
    let n = reader
        .take(MAX_REQUEST_LINE as u64 + 1)
        .read_until(b'\n', buf)
        .await?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    } else if buf.len() > MAX_REQUEST_LINE {
        return Ok(Line::TooLong);
    }
    // else: the last line, without a newline; answered all the same.
    Ok(Line::Complete)
}

async fn connection(
    stream: UnixStream,
    spool: Spool,
    delivery: Arc<dyn DeliveryControl>,
    reload: Option<ReloadFn>,
    status: Option<StatusFn>,
    tls_report: Option<Arc<crate::delivery::tls_rpt::report::Reporter>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let read = tokio::select! {
            read = read_line(&mut reader, &mut line) => read,
            _ = shutdown.changed() => return,
        };
        let (out, close) = match read {
            Ok(Line::Eof) => return,
            Err(e) => {
                debug!(error = %e, "control socket: read failed");
                return;
            }
            Ok(Line::TooLong) => (
                answer_line(&Response::error(format!(
                    "request line longer than {MAX_REQUEST_LINE} bytes"
                ))),
                true,
            ),
            Ok(Line::Complete) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(Line::Complete) if serde_json::from_slice::<ReloadRequest>(&line).is_ok() => {
                let answer = match &reload {
                    Some(f) => {
                        let f = f.clone();
                        tokio::task::spawn_blocking(move || f())
                            .await
                            .unwrap_or_else(|e| ReloadResponse {
                                errors: format!("the reload failed: {e}"),
                                ..ReloadResponse::default()
                            })
                    }
                    None => ReloadResponse {
                        errors: "this daemon cannot reload".to_owned(),
                        ..ReloadResponse::default()
                    },
                };
                (answer_line(&answer), false)
            }
            Ok(Line::Complete) if serde_json::from_slice::<TlsReportRequest>(&line).is_ok() => {
                let now = serde_json::from_slice::<TlsReportRequest>(&line).is_ok_and(|r| r.now);
                let answer = match &tls_report {
                    Some(r) => match r.send(now).await {
                        Ok(summary) => TlsReportResponse {
                            ok: true,
                            lines: summary.lines,
                            ..TlsReportResponse::default()
                        },
                        Err(e) => TlsReportResponse {
                            error: format!("TLS reports not sent: {e}"),
                            ..TlsReportResponse::default()
                        },
                    },
                    None => TlsReportResponse {
                        error: "this daemon sends no TLS reports".to_owned(),
                        ..TlsReportResponse::default()
                    },
                };
                (answer_line(&answer), false)
            }
            Ok(Line::Complete) if serde_json::from_slice::<ReloadRefusedRequest>(&line).is_ok() => {
                if let Ok(refused) = serde_json::from_slice::<ReloadRefusedRequest>(&line) {
                    super::reload::refused(refused.reload_refused, "mtactl");
                }
                let ok = ReloadResponse {
                    ok: true,
                    ..ReloadResponse::default()
                };
                (answer_line(&ok), false)
            }
            Ok(Line::Complete) if serde_json::from_slice::<EvacuateRequest>(&line).is_ok() => {
                let answer = match serde_json::from_slice::<EvacuateRequest>(&line) {
                    Ok(req) => evacuate_to(&req, delivery.as_ref()),
                    Err(e) => Response::error(e.to_string()),
                };
                (answer_line(&answer), false)
            }
            Ok(Line::Complete) if serde_json::from_slice::<StatusRequest>(&line).is_ok() => {
                let answer = match &status {
                    Some(f) => f(),
                    None => Status {
                        error: "this daemon cannot report its status".to_owned(),
                        ..Status::default()
                    },
                };
                (answer_line(&answer), false)
            }
            Ok(Line::Complete) => {
                let response = match serde_json::from_slice::<Request>(&line) {
                    Ok(req) => execute(&req, &spool, delivery.as_ref()).await,
                    Err(e) => Response::error(format!("malformed request: {e}")),
                };
                (answer_line(&response), false)
            }
        };
        let Some(out) = out else { return };
        if write.write_all(&out).await.is_err() || close {
            return;
        }
    }
}

/// One response line: `answer` as JSON, and a newline.
fn answer_line<T: Serialize>(answer: &T) -> Option<Vec<u8>> {
    match serde_json::to_vec(answer) {
        Ok(mut out) => {
            out.push(b'\n');
            Some(out)
        }
        Err(e) => {
            warn!(error = %e, "control socket: cannot encode a response");
            None
        }
    }
}

/// Runs one request against the spool and the scheduler.
pub async fn execute(req: &Request, spool: &Spool, delivery: &dyn DeliveryControl) -> Response {
    if req.all && !req.ids.is_empty() {
        return Response::error("give ids or \"all\":true, not both");
    }
    if req.queue == QueueAction::Delete && !req.all && req.ids.is_empty() {
        return Response::error("delete needs ids, or \"all\":true to delete every message");
    }
    let mut response = Response::default();
    // The messages to act on, sorted, with their held flag.
    let targets: Vec<(QueueId, bool)> = if req.ids.is_empty() {
        spool
            .list()
            .into_iter()
            .map(|m| (m.id, m.envelope.held))
            .collect()
    } else {
        let wanted: BTreeSet<QueueId> = req.ids.iter().copied().collect();
        wanted
            .into_iter()
            .filter_map(|id| match spool.get(id) {
                Some(m) => Some((id, m.envelope.held)),
                None => {
                    response.missing.push(id);
                    None
                }
            })
            .collect()
    };
    let all = req.ids.is_empty();
    match req.queue {
        QueueAction::Flush => {
            for (id, held) in targets {
                if held {
                    response.held.push(id);
                } else {
                    response.done.push(id);
                }
            }
            if !response.done.is_empty() {
                delivery.flush(&response.done);
            }
            info!(
                flushed = response.done.len(),
                skipped_held = response.held.len(),
                "queue flush requested"
            );
        }
        QueueAction::Hold | QueueAction::Release => {
            let hold = req.queue == QueueAction::Hold;
            let mut change = Vec::new();
            for (id, held) in targets {
                if held == hold {
                    // Already in that state: nothing to write. "All" means every message
                    // that is not, so those are not reported.
                    if !all {
                        response.done.push(id);
                    }
                } else {
                    change.push(id);
                }
            }
            let changed = write_each(spool, change, &mut response, move |spool, id| async move {
                spool.set_held(id, hold).await
            })
            .await;
            for &id in &changed {
                if hold {
                    delivery.forget(id);
                    info!(queue_id = %id, "placed on hold");
                } else {
                    info!(queue_id = %id, "released from hold");
                }
            }
            if !hold && !changed.is_empty() {
                delivery.flush(&changed);
            }
            response.done.extend(changed);
            response.done.sort_unstable();
        }
        QueueAction::Delete => {
            let ids = targets.into_iter().map(|(id, _)| id).collect();
            let removed = write_each(spool, ids, &mut response, |spool, id| async move {
                spool.remove(id).await
            })
            .await;
            for &id in &removed {
                delivery.forget(id);
                info!(queue_id = %id, "removed");
            }
            response.done = removed;
        }
    }
    response.missing.sort_unstable();
    response
}

/// Runs `op` for every id, [`CONCURRENT_WRITES`] at a time, and returns the ids it
/// succeeded for, sorted. NotFound (gone since we looked) goes to `response.missing`; any
/// other error stops after the current group and sets `response.error`.
async fn write_each<F, Fut>(
    spool: &Spool,
    ids: Vec<QueueId>,
    response: &mut Response,
    op: F,
) -> Vec<QueueId>
where
    F: Fn(Spool, QueueId) -> Fut,
    Fut: Future<Output = Result<(), SpoolError>> + Send + 'static,
{
    let mut ok = Vec::with_capacity(ids.len());
    for group in ids.chunks(CONCURRENT_WRITES) {
        let mut writes = JoinSet::new();
        for &id in group {
            let write = op(spool.clone(), id);
            writes.spawn(async move { (id, write.await) });
        }
        while let Some(joined) = writes.join_next().await {
            match joined {
                Ok((id, Ok(()))) => ok.push(id),
                Ok((id, Err(SpoolError::NotFound(_)))) => response.missing.push(id),
                Ok((id, Err(e))) => {
                    warn!(queue_id = %id, error = %e, "control socket: spool write failed");
                    response.error.get_or_insert_with(|| e.to_string());
                }
                Err(e) => {
                    response
                        .error
                        .get_or_insert_with(|| format!("internal error: {e}"));
                }
            }
        }
        if response.error.is_some() {
            break;
        }
    }
    ok.sort_unstable();
    ok
}
