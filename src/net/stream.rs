//! The byte streams SMTP runs over. Delivery's connections ([`ClientStream`]): TCP, TLS
//! over TCP after STARTTLS, or a unix socket, and where they lead ([`Remote`]). The
//! SMTP server's sessions ([`ServerStream`]): any byte stream (a TCP connection, an
//! in-memory pipe for a dry run or a test), with TLS over it after STARTTLS or at once
//! on an implicit-TLS listener.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use tracing::debug;

/// Where a connection goes: an address and port, or a unix socket (LMTP).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Remote {
    Inet(SocketAddr),
    Unix(PathBuf),
}

impl Remote {
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Remote::Inet(a) => Some(a.ip()),
            Remote::Unix(_) => None,
        }
    }

    pub fn port(&self) -> Option<u16> {
        match self {
            Remote::Inet(a) => Some(a.port()),
            Remote::Unix(_) => None,
        }
    }

    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Remote::Inet(a) => Some(*a),
            Remote::Unix(_) => None,
        }
    }

    /// For logs, as Postfix's `relay=`: `mx.example.com[192.0.2.1]:25`, or the socket's
    /// path.
    pub fn relay(&self, host: &str) -> String {
        match self {
            Remote::Inet(a) => format!("{host}[{}]:{}", a.ip(), a.port()),
            Remote::Unix(p) => p.display().to_string(),
        }
    }
}

/// `192.0.2.1:25`, `[2001:db8::1]:25` or `unix:/path`.
impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Remote::Inet(a) => write!(f, "{a}"),
            Remote::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl From<SocketAddr> for Remote {
    fn from(a: SocketAddr) -> Self {
        Remote::Inet(a)
    }
}

impl From<PathBuf> for Remote {
    fn from(p: PathBuf) -> Self {
        Remote::Unix(p)
    }
}

impl From<&Path> for Remote {
    fn from(p: &Path) -> Self {
        Remote::Unix(p.to_path_buf())
    }
}

/// What the client needs of its stream beyond reading and writing: whether it is
/// encrypted, and turning it into a TLS stream after STARTTLS's 220.
pub trait SmtpStream: AsyncRead + AsyncWrite + Unpin + Send {
    /// TLS protects the stream.
    fn is_encrypted(&self) -> bool;

    /// Runs the TLS handshake as a client over this stream, which then carries TLS.
    /// The stream must not be read or written meanwhile, and nothing may be buffered
    /// above it. On an error the stream is unusable.
    fn start_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> impl Future<Output = io::Result<()>> + Send;
}

/// A delivery connection's stream: plain TCP, TLS over TCP, or a unix socket.
#[derive(Debug)]
pub struct ClientStream(Inner);

#[derive(Debug)]
enum Inner {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Unix(UnixStream),
    /// Between giving the TCP stream to the handshake and getting TLS back, or after
    /// a failed handshake: every operation fails.
    Closed,
}

impl ClientStream {
    pub fn tcp(s: TcpStream) -> Self {
        ClientStream(Inner::Tcp(s))
    }

    pub fn unix(s: UnixStream) -> Self {
        ClientStream(Inner::Unix(s))
    }

    /// The negotiated protocol version and cipher suite, once TLS is up
    /// (`TLSv1_3 TLS13_AES_256_GCM_SHA384`).
    pub fn tls_description(&self) -> Option<String> {
        let (version, suite) = self.tls_parameters()?;
        Some(format!("{version} {suite}"))
    }

    /// The protocol version and cipher suite once TLS is up, as rustls names them:
    /// (`TLSv1_3`, `TLS13_AES_256_GCM_SHA384`).
    pub fn tls_parameters(&self) -> Option<(String, String)> {
        let Inner::Tls(tls) = &self.0 else {
            return None;
        };
        let (_, conn) = tls.get_ref();
        let version = conn
            .protocol_version()
            .map_or_else(|| "TLS".to_owned(), |v| format!("{v:?}"));
        let suite = conn
            .negotiated_cipher_suite()
            .map_or_else(|| "?".to_owned(), |s| format!("{:?}", s.suite()));
        Some((version, suite))
    }

    /// Takes the TCP stream out for a handshake; refuses if TLS is up, or over a unix
    /// socket (the stream is then left as it was).
    fn take_tcp(&mut self) -> io::Result<TcpStream> {
        match std::mem::replace(&mut self.0, Inner::Closed) {
            Inner::Tcp(tcp) => Ok(tcp),
            other => {
                let why = match other {
                    Inner::Tls(_) => "TLS is already active",
                    Inner::Unix(_) => "STARTTLS over a unix socket is not supported",
                    _ => "the connection is closed",
                };
                self.0 = other;
                Err(io::Error::new(io::ErrorKind::Unsupported, why))
            }
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the connection is closed")
}

impl SmtpStream for ClientStream {
    fn is_encrypted(&self) -> bool {
        matches!(self.0, Inner::Tls(_))
    }

    async fn start_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<()> {
        let tcp = self.take_tcp()?;
        let tls = TlsConnector::from(config).connect(name, tcp).await?;
        self.0 = Inner::Tls(Box::new(TlsStream::Client(tls)));
        debug!(
            tls = self.tls_description().unwrap_or_default(),
            "TLS established."
        );
        Ok(())
    }
}

/// In-memory streams for transcripts in tests: never encrypted, cannot start TLS.
impl SmtpStream for tokio::io::DuplexStream {
    fn is_encrypted(&self) -> bool {
        false
    }

    async fn start_tls(
        &mut self,
        _config: Arc<rustls::ClientConfig>,
        _name: ServerName<'static>,
    ) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "an in-memory stream cannot start TLS",
        ))
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Inner::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Closed => Poll::Ready(Err(closed())),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Inner::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Inner::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::Tcp(s) => Pin::new(s).poll_flush(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Inner::Unix(s) => Pin::new(s).poll_flush(cx),
            Inner::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Inner::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Closed => Poll::Ready(Ok(())),
        }
    }
}

// ---- the server side --------------------------------------------------------------

/// Any stream a server session can run over: a TCP connection, one end of
/// [`tokio::io::duplex`], a unix socket. `Sync` too, because the verbs hold `&Session`
/// across their awaits and the daemon runs sessions on a multi-threaded runtime (every
/// tokio stream is).
pub trait ServerIo: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> ServerIo for T {}

/// A server session's stream: what the listener accepted (or a test's in-memory pipe),
/// then TLS over it once STARTTLS or an implicit-TLS listener ran the handshake.
///
/// The transport is boxed, not a type parameter of the session: a session makes one
/// read or write call per buffer (8 KiB), so the indirect call costs nothing worth
/// measuring, while a generic `Session<S>` would put a type parameter on every verb's
/// `impl` block and compile the whole session once per stream type.
pub struct ServerStream(ServerInner);

enum ServerInner {
    Plain(Box<dyn ServerIo>),
    Tls(Box<tokio_rustls::server::TlsStream<Box<dyn ServerIo>>>),
    /// During the handshake, or after a failed one: every operation fails.
    Closed,
}

impl fmt::Debug for ServerStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.0 {
            ServerInner::Plain(_) => "plain",
            ServerInner::Tls(_) => "tls",
            ServerInner::Closed => "closed",
        };
        f.debug_tuple("ServerStream").field(&state).finish()
    }
}

impl ServerStream {
    pub fn new(io: impl ServerIo) -> Self {
        ServerStream(ServerInner::Plain(Box::new(io)))
    }

    /// Runs the TLS handshake as the server (after our STARTTLS 220, or at once on an
    /// implicit-TLS listener). Nothing may be buffered above the stream: bytes the
    /// client sent before the handshake would otherwise be lost or, worse, read as if
    /// they had been encrypted. On an error the stream is closed; if TLS is already up,
    /// the stream is left as it was.
    pub async fn accept_tls(&mut self, acceptor: &TlsAcceptor) -> io::Result<()> {
        let plain = match std::mem::replace(&mut self.0, ServerInner::Closed) {
            ServerInner::Plain(io) => io,
            ServerInner::Closed => return Err(closed()),
            tls => {
                self.0 = tls;
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "TLS is already active",
                ));
            }
        };
        let tls = acceptor.accept(plain).await?;
        self.0 = ServerInner::Tls(Box::new(tls));
        Ok(())
    }

    /// The protocol version and cipher suite once TLS is up, as rustls names them:
    /// (`TLSv1_3`, `TLS13_AES_256_GCM_SHA384`).
    pub fn tls_parameters(&self) -> Option<(String, String)> {
        let ServerInner::Tls(tls) = &self.0 else {
            return None;
        };
        let (_, conn) = tls.get_ref();
        let version = conn
            .protocol_version()
            .map_or_else(|| "TLS".to_owned(), |v| format!("{v:?}"));
        let suite = conn
            .negotiated_cipher_suite()
            .map_or_else(|| "?".to_owned(), |s| format!("{:?}", s.suite()));
        Some((version, suite))
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            ServerInner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServerInner::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            ServerInner::Closed => Poll::Ready(Err(closed())),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            ServerInner::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServerInner::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            ServerInner::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            ServerInner::Plain(s) => Pin::new(s).poll_flush(cx),
            ServerInner::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            ServerInner::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            ServerInner::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ServerInner::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            ServerInner::Closed => Poll::Ready(Ok(())),
        }
    }
}
