//! The Prometheus endpoint: `GET /metrics` over plain HTTP/1.x on
//! `server { metrics "IP:PORT" }`.
//!
//! A deliberately small and strict responder, not a web server: one request per
//! connection (`Connection: close`), the request head at most [`MAX_REQUEST`] bytes and
//! read within [`TIMEOUT`], at most [`MAX_CONNECTIONS`] at once (more are closed at
//! once). `GET /metrics` (a query string is ignored) answers 200 with the metrics,
//! `HEAD /metrics` the same without the body; another path is 404, another method 405,
//! anything that is not an HTTP request line 400, a head too long 431. It never reads a
//! request body, and no input can make it panic or hold memory beyond the head.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// Longest request head (request line and headers) accepted.
pub const MAX_REQUEST: usize = 8 * 1024;
/// For reading the request and for writing the response.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;

/// What answers a scrape: the whole exposition, in [`super::CONTENT_TYPE`].
pub type RenderFn = Arc<dyn Fn() -> String + Send + Sync>;

/// A bound endpoint, not yet serving (binding first lets mtad fail at start when the
/// address is taken).
pub struct Endpoint {
    listener: TcpListener,
}

impl Endpoint {
    pub async fn bind(address: SocketAddr) -> io::Result<Endpoint> {
        Ok(Endpoint {
            listener: TcpListener::bind(address).await?,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers scrapes with `render` until `shutdown` turns true.
    pub async fn serve(self, render: RenderFn, mut shutdown: watch::Receiver<bool>) {
        let address = self.local_addr().map(|a| a.to_string()).unwrap_or_default();
        info!(%address, "metrics endpoint ready");
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if connections.len() >= MAX_CONNECTIONS {
                            debug!(%peer, "metrics endpoint busy; connection closed");
                            continue;
                        }
                        connections.spawn(answer(stream, render.clone()));
                    }
                    Err(err) => {
                        warn!(%err, "metrics endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.abort_all();
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    Metrics { head_only: bool },
    NotFound,
    BadMethod,
    BadRequest,
    TooLarge,
}

async fn answer(mut stream: TcpStream, render: RenderFn) {
    let mut head = Vec::with_capacity(1024);
    let asked = match tokio::time::timeout(TIMEOUT, read_head(&mut stream, &mut head)).await {
        Ok(Ok(Some(()))) => parse(&head),
        Ok(Ok(None)) => Asked::TooLarge,
        Ok(Err(_)) | Err(_) => return, // closed early, or too slow: nothing to answer
    };
    let (status, body, head_only) = match asked {
        Asked::Metrics { head_only } => ("200 OK", None, head_only),
        Asked::NotFound => (
            "404 Not Found",
            Some("only /metrics is served here\n"),
            false,
        ),
        Asked::BadMethod => ("405 Method Not Allowed", Some("only GET\n"), false),
        Asked::BadRequest => ("400 Bad Request", Some("not an HTTP request\n"), false),
        Asked::TooLarge => (
            "431 Request Header Fields Too Large",
            Some("request too large\n"),
            false,
        ),
    };
    let (content_type, body) = match body {
        Some(text) => ("text/plain; charset=utf-8", text.to_owned()),
        None => (super::CONTENT_TYPE, render()),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        response.push_str("Allow: GET, HEAD\r\n");
    }
    response.push_str("\r\n");
    if !head_only {
        response.push_str(&body);
    }
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(TIMEOUT, write).await;
}

/// Reads up to the blank line ending the head: `Some(())` when found within
/// [`MAX_REQUEST`] bytes, `None` when the head is longer.
async fn read_head(stream: &mut TcpStream, head: &mut Vec<u8>) -> io::Result<Option<()>> {
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = find_end(&head[from..]) {
            head.truncate(from + end);
            return Ok(Some(()));
        }
        if head.len() > MAX_REQUEST {
            return Ok(None);
        }
    }
}

/// Where the head ends (`\r\n\r\n`, or a bare `\n\n`), exclusive.
fn find_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| bytes.windows(2).position(|w| w == b"\n\n"))
}

/// Reads the request line: `METHOD TARGET HTTP/1.x`.
fn parse(head: &[u8]) -> Asked {
    let line_end = head
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Asked::BadRequest;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Asked::BadRequest;
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
    {
        return Asked::BadRequest;
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => Asked::Metrics {
            head_only: method == "HEAD",
        },
        ("GET" | "HEAD", _) => Asked::NotFound,
        _ => Asked::BadMethod,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        let cases: &[(&[u8], Asked)] = &[
            (
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
                Asked::Metrics { head_only: false },
            ),
            (
                b"GET /metrics?x=1 HTTP/1.0",
                Asked::Metrics { head_only: false },
            ),
            (
                b"HEAD /metrics HTTP/1.1",
                Asked::Metrics { head_only: true },
            ),
            (b"GET / HTTP/1.1", Asked::NotFound),
            (b"GET /metricsx HTTP/1.1", Asked::NotFound),
            (b"POST /metrics HTTP/1.1", Asked::BadMethod),
            (b"DELETE /metrics HTTP/1.1", Asked::BadMethod),
            (b"GET /metrics", Asked::BadRequest),
            (b"GET /metrics HTTP/2.0", Asked::BadRequest),
            (b"GET  /metrics HTTP/1.1", Asked::BadRequest),
            (b"get /metrics HTTP/1.1", Asked::BadRequest),
            (b"GET metrics HTTP/1.1", Asked::BadRequest),
            (b"EHLO client.test", Asked::BadRequest),
            (b"\xff\xfe /metrics HTTP/1.1", Asked::BadRequest),
            (b"", Asked::BadRequest),
        ];
        for (line, want) in cases {
            assert_eq!(&parse(line), want, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn the_end_of_the_head() {
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\n"), Some(20));
        assert_eq!(find_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(find_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
