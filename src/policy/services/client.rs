//! A policy server's client side: connections kept open and reused, as Postfix's
//! `smtpd` keeps them (closed after `max-idle` unused, or `max-ttl` after they were
//! opened), and each request bounded by the service's `timeout` over all its tries.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::protocol::{self, ReplyError};
use crate::config::services::{Endpoint, PolicyService};

/// Most idle connections kept per service (more concurrent requests open more
/// connections; the extra ones are closed when done).
const MAX_IDLE_CONNECTIONS: usize = 16;

/// Why a policy server gave no usable answer (its default action then applies).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("{endpoint}: {source}")]
    Io {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("{endpoint} closed the connection before answering")]
    Closed { endpoint: String },
    #[error("{endpoint}: no answer within {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },
    #[error("{endpoint}: {source}")]
    Reply {
        endpoint: String,
        source: ReplyError,
    },
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

struct Conn {
    stream: Stream,
    opened: Instant,
    used: Instant,
}

/// One `policy-service`: its settings and its idle connections.
pub struct PolicyClient {
    pub settings: PolicyService,
    idle: Mutex<Vec<Conn>>,
}

impl std::fmt::Debug for PolicyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl PolicyClient {
    pub fn new(settings: PolicyService) -> Self {
        PolicyClient {
            settings,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `request` and reads the action: on a kept connection if one is fresh
    /// enough, else on a new one; a failed try (the server closed a kept connection,
    /// a malformed reply) is tried again on a new connection, up to `try-limit`
    /// tries, all within `timeout`.
    pub async fn ask(&self, request: &[u8]) -> Result<String, ServiceError> {
        let endpoint = self.settings.endpoint.to_string();
        let timeout = self.settings.timeout;
        match tokio::time::timeout(timeout, self.tries(request, &endpoint)).await {
            Ok(answer) => answer,
            Err(_) => Err(ServiceError::Timeout { endpoint, timeout }),
        }
    }

    async fn tries(&self, request: &[u8], endpoint: &str) -> Result<String, ServiceError> {
        let mut last = None;
        for _ in 0..self.settings.try_limit.max(1) {
            let conn = match self.take_idle() {
                Some(c) => c,
                None => self.connect(endpoint).await?,
            };
            match exchange(conn, request, endpoint).await {
                Ok((action, conn)) => {
                    if let Some(conn) = conn {
                        self.put_back(conn);
                    }
                    return Ok(action);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ServiceError::Closed {
            endpoint: endpoint.to_owned(),
        }))
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let (max_idle, max_ttl) = (self.settings.max_idle, self.settings.max_ttl);
        idle.retain(|c| c.used.elapsed() < max_idle && c.opened.elapsed() < max_ttl);
        idle.pop()
    }

    fn put_back(&self, mut conn: Conn) {
        conn.used = Instant::now();
        if conn.opened.elapsed() >= self.settings.max_ttl {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_CONNECTIONS {
            idle.push(conn);
        }
    }

    async fn connect(&self, endpoint: &str) -> Result<Conn, ServiceError> {
        let connect_error = |source| ServiceError::Connect {
            endpoint: endpoint.to_owned(),
            source,
        };
        let stream = match &self.settings.endpoint {
            Endpoint::Inet { host, port } => {
                let stream = TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(connect_error)?;
                let _ = stream.set_nodelay(true);
                Stream::Tcp(stream)
            }
            Endpoint::Unix(path) => {
                Stream::Unix(UnixStream::connect(path).await.map_err(connect_error)?)
            }
        };
        let now = Instant::now();
        Ok(Conn {
            stream,
            opened: now,
            used: now,
        })
    }

    /// Idle connections kept now (for tests).
    pub fn idle_connections(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One request and its reply on `conn`; the connection comes back when it may be
/// used again (nothing was sent after the reply).
async fn exchange(
    mut conn: Conn,
    request: &[u8],
    endpoint: &str,
) -> Result<(String, Option<Conn>), ServiceError> {
    let io = |source| ServiceError::Io {
        endpoint: endpoint.to_owned(),
        source,
    };
    let (action, clean) = match &mut conn.stream {
        Stream::Tcp(s) => talk(s, request, endpoint).await,
        Stream::Unix(s) => talk(s, request, endpoint).await,
    }
    .map_err(|e| match e {
        Talk::Io(source) => io(source),
        Talk::Closed => ServiceError::Closed {
            endpoint: endpoint.to_owned(),
        },
        Talk::Reply(source) => ServiceError::Reply {
            endpoint: endpoint.to_owned(),
            source,
        },
    })?;
    Ok((action, clean.then_some(conn)))
}

enum Talk {
    Io(std::io::Error),
    Closed,
    Reply(ReplyError),
}

async fn talk<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    request: &[u8],
    _endpoint: &str,
) -> Result<(String, bool), Talk> {
    s.write_all(request).await.map_err(Talk::Io)?;
    s.flush().await.map_err(Talk::Io)?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await.map_err(Talk::Io)?;
        if n == 0 {
            return Err(Talk::Closed);
        }
        let room = protocol::MAX_REPLY.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..n.min(room)]);
        match protocol::parse_reply(&buf) {
            Ok(Some((action, used))) => return Ok((action, used == buf.len() && n <= room)),
            Ok(None) => continue,
            Err(e) => return Err(Talk::Reply(e)),
        }
    }
}
