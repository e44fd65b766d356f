//! One SMTP or LMTP connection and the transactions sent over it.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};
use tracing::debug;

use super::body::{BodyEncoder, CHUNK};
use super::reply::{RawReply, ReadError, Reply, read_reply};
use super::tls::{TlsClient, TlsMode};
use crate::net::stream::{ClientStream, Remote, SmtpStream};

/// How the client talks to one destination. [`ClientConfig::new`] gives Postfix's
/// timeouts, no TLS and no AUTH; set the other fields on what it returns.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The name we give in EHLO/HELO/LHLO.
    pub helo_name: String,
    /// For the TCP connection itself.
    pub connect_timeout: Duration,
    /// For each command: writing it and reading its reply (the greeting too).
    pub command_timeout: Duration,
    /// For the whole DATA body and the final reply (or, with LMTP, all final replies).
    pub data_timeout: Duration,
    /// Speak LMTP (RFC 2033): LHLO, and one final reply per accepted recipient.
    pub lmtp: bool,
    /// Whether to STARTTLS after EHLO, and whether the certificate is checked.
    pub tls: TlsMode,
    /// The rustls configurations, shared by all connections; needed for any `tls` but
    /// [`TlsMode::None`] (without it the delivery fails with [`DeliveryError::Tls`]).
    pub tls_client: Option<Arc<TlsClient>>,
    /// The server's host name (the relayhost's or the MX host's, never the recipient
    /// domain's): sent as SNI, and what the certificate must match with
    /// [`TlsMode::Verify`], which fails without it. With the other modes and no name, no
    /// SNI is sent.
    pub tls_name: Option<String>,
    /// The certificate check of this connection when it is not `tls_client`'s own for
    /// `tls` (names from `match=`, DANE's TLSA records): built by
    /// `delivery::tls_policy` for one destination. With it, [`TlsMode::Verify`] needs
    /// no `tls_name` (the check carries its names; the name is still sent as SNI).
    pub tls_check: Option<Arc<rustls::ClientConfig>>,
    /// Authenticate (RFC 4954) before MAIL when the server offers AUTH.
    pub auth: Option<Credentials>,
    /// Allow sending `auth` over a connection that is not encrypted (off: the delivery
    /// fails rather than expose the password).
    pub auth_plaintext: bool,
    /// Fail with [`DeliveryError::Loop`] when the server's EHLO reply names
    /// `helo_name` (Postfix checks this on port 25 only: other ports on this host are
    /// content filters and such, which may well share the host's name).
    pub loop_detect: bool,
}

impl ClientConfig {
    /// Postfix's timeouts (`smtp_connect_timeout` 30 s, `smtp_helo_timeout` and the
    /// command timeouts 300 s, `smtp_data_done_timeout` 600 s), SMTP, no TLS, no AUTH.
    pub fn new(helo_name: impl Into<String>) -> Self {
        ClientConfig {
            helo_name: helo_name.into(),
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            lmtp: false,
            tls: TlsMode::None,
            tls_client: None,
            tls_name: None,
            tls_check: None,
            auth: None,
            auth_plaintext: false,
            loop_detect: false,
        }
    }
}

/// A user name and password for AUTH PLAIN or LOGIN. `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What is sent in one transaction.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The reverse path without `<>`; empty for the null sender (bounces).
    pub sender: &'a str,
    /// Forward paths without `<>`, all for this destination.
    pub recipients: &'a [String],
    /// The body has bytes above 127: `BODY=8BITMIME` when the server offers it.
    pub body_8bit: bool,
    /// The envelope or headers need SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// The message size, for `SIZE=` and the check against the server's SIZE.
    pub size: usize,
    /// XFORWARD attributes (`ADDR`, `NAME`, `HELO`, `PROTO`, ...) with their values, sent
    /// before MAIL when the server offers XFORWARD (Postfix's XFORWARD_README; a content
    /// filter learns the original client). Empty: never sent.
    pub xforward: &'a [(&'static str, String)],
}

/// The result for one recipient, in the order of [`Envelope::recipients`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptOutcome {
    /// The server took responsibility: never send it to this recipient again.
    Delivered(Reply),
    /// Try again later.
    TempFail(Reply),
    /// Bounce.
    PermFail(Reply),
}

impl RcptOutcome {
    fn from_reply(reply: Reply) -> Self {
        if reply.is_positive() {
            RcptOutcome::Delivered(reply)
        } else if reply.is_permanent() {
            RcptOutcome::PermFail(reply)
        } else {
            RcptOutcome::TempFail(reply)
        }
    }

    /// The reply this outcome came from.
    pub fn reply(&self) -> &Reply {
        match self {
            RcptOutcome::Delivered(r) | RcptOutcome::TempFail(r) | RcptOutcome::PermFail(r) => r,
        }
    }
}

/// What [`deliver`] returns when the transaction ran to its end.
#[derive(Debug, Clone)]
pub struct TransactionResult {
    /// One outcome per recipient, in the envelope's order.
    pub per_recipient: Vec<RcptOutcome>,
    pub remote: Remote,
    /// The text of the server's 220 greeting.
    pub greeting: String,
    /// The TLS version and cipher suite when the transaction was encrypted.
    pub tls: Option<String>,
    /// The client authenticated with AUTH.
    pub authenticated: bool,
}

/// Why a transaction failed as a whole. Every recipient shares the failure; whether to
/// retry is [`DeliveryError::is_permanent`].
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("cannot connect to {remote}: {source}")]
    Connect {
        remote: Remote,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out during {step}")]
    Timeout { step: &'static str },
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A table the attempt needed (the route's `credentials`, a database) could not
    /// answer: nothing was sent.
    #[error("temporary lookup failure: {0}")]
    Lookup(String),
    #[error("connection error during {step}: {source}")]
    Io {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The server (or a check made for it, like SIZE) refused the whole transaction at
    /// the greeting, EHLO/HELO/LHLO, MAIL or DATA.
    #[error("{step} rejected: {reply}")]
    Rejected {
        step: &'static str,
        reply: Reply,
        permanent: bool,
    },
    /// STARTTLS was needed but not offered, was refused, or its handshake failed (the
    /// certificate too, with [`TlsMode::Verify`]), or the TLS settings are incomplete.
    /// Always temporary. See [`DeliveryError::allows_plaintext_retry`].
    #[error("TLS failure: {message}")]
    Tls {
        message: String,
        /// What kind of failure it was, as TLS reports (RFC 8460) name them.
        result: super::tls_rpt::ResultType,
        /// The mode was [`TlsMode::Opportunistic`]: the same host may be tried once
        /// more with [`TlsMode::None`], as Postfix does.
        plaintext_retry: bool,
    },
    /// AUTH was needed and could not be done: credentials not sent over plaintext, no
    /// mechanism in common, or the server refused them (`reply`). Always temporary, as
    /// Postfix defers on authentication failures.
    #[error("{message}")]
    Auth {
        message: String,
        reply: Option<Reply>,
    },
    /// The server answered EHLO with our own hostname: the mail would come back to
    /// us (Postfix: "host X replied to HELO/EHLO with my own hostname"). Only checked
    /// when [`ClientConfig::loop_detect`] is set.
    #[error("host replied to EHLO with my own hostname {name}")]
    Loop { name: String },
}

impl DeliveryError {
    /// Only a 5xx refusal is permanent; network trouble and 4xx are worth a retry.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            DeliveryError::Rejected {
                permanent: true,
                ..
            }
        )
    }

    /// Any [`DeliveryError::Tls`]. Whether retrying without TLS is allowed is
    /// [`DeliveryError::allows_plaintext_retry`], not this.
    pub fn is_tls_failure(&self) -> bool {
        matches!(self, DeliveryError::Tls { .. })
    }

    /// A TLS failure in [`TlsMode::Opportunistic`]: the caller may retry the same host
    /// once with [`TlsMode::None`]. Never true for `Required` or `Verify`.
    pub fn allows_plaintext_retry(&self) -> bool {
        matches!(
            self,
            DeliveryError::Tls {
                plaintext_retry: true,
                ..
            }
        )
    }

    fn rejected(step: &'static str, reply: Reply) -> Self {
        let permanent = reply.is_permanent();
        DeliveryError::Rejected {
            step,
            reply,
            permanent,
        }
    }

    fn read(step: &'static str, e: ReadError) -> Self {
        match e {
            ReadError::Io(source) => DeliveryError::Io { step, source },
            ReadError::Eof => DeliveryError::Io {
                step,
                source: std::io::ErrorKind::UnexpectedEof.into(),
            },
            ReadError::Malformed(m) => DeliveryError::Protocol(format!("{step}: {m}")),
        }
    }
}

/// What the server's EHLO (or LHLO) reply offered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// False when the server only answered HELO.
    pub esmtp: bool,
    pub pipelining: bool,
    /// `SIZE` was offered: `Some(0)` means no fixed limit.
    pub size: Option<u64>,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub chunking: bool,
    pub enhanced_status_codes: bool,
    pub starttls: bool,
    /// The SASL mechanisms of `AUTH` (and of the old `AUTH=` form), uppercase.
    pub auth: Vec<String>,
    /// The attributes `XFORWARD` accepts, uppercase (empty: not offered).
    pub xforward: Vec<String>,
}

impl Capabilities {
    fn parse(reply: &RawReply) -> Self {
        let mut caps = Capabilities {
            esmtp: true,
            ..Capabilities::default()
        };
        // The first line is the server's name, the others one extension each.
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            let keyword = keyword.to_ascii_uppercase();
            // `AUTH PLAIN LOGIN`, or the pre-RFC `AUTH=PLAIN LOGIN`.
            if let Some(first) = keyword
                .strip_prefix("AUTH=")
                .or_else(|| (keyword == "AUTH").then_some(""))
            {
                for mech in std::iter::once(first).chain(words) {
                    let mech = mech.to_ascii_uppercase();
                    // Bounded by the reply's size; a mechanism name is at most 20 chars.
                    if !mech.is_empty() && mech.len() <= 20 && !caps.auth.contains(&mech) {
                        caps.auth.push(mech);
                    }
                }
                continue;
            }
            match keyword.as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "CHUNKING" => caps.chunking = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "STARTTLS" => caps.starttls = true,
                "XFORWARD" => {
                    caps.xforward = words
                        .take(16)
                        .map(str::to_ascii_uppercase)
                        .filter(|a| a.len() <= 16)
                        .collect();
                }
                _ => {}
            }
        }
        caps
    }
}

/// Where a connection stands between transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Greeted, not yet EHLO'd.
    Greeted,
    /// Ready for MAIL.
    Ready,
    /// A transaction failed part-way: RSET before the next one.
    NeedsRset,
    /// A timeout, an IO or protocol error, or a 421: nothing more can be sent.
    Broken,
}

/// An open SMTP/LMTP connection, for one or more transactions.
///
/// ```ignore
/// let mut c = SmtpConnection::connect(addr, &config).await?;
/// c.ehlo().await?;
/// let first = c.send_transaction(&envelope, message).await?;
/// let second = c.send_transaction(&other, other_message).await?;
/// c.quit().await;
/// ```
#[derive(Debug)]
pub struct SmtpConnection<S = ClientStream> {
    stream: BufReader<S>,
    config: ClientConfig,
    remote: Remote,
    greeting: String,
    caps: Capabilities,
    state: State,
    authenticated: bool,
}

impl SmtpConnection<ClientStream> {
    /// Connects over TCP and reads the greeting (a non-220 greeting is
    /// [`DeliveryError::Rejected`]).
    pub async fn connect(addr: SocketAddr, config: &ClientConfig) -> Result<Self, DeliveryError> {
        let remote = Remote::Inet(addr);
        let tcp = match tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr)).await
        {
            Err(_) => return Err(DeliveryError::Timeout { step: "connect" }),
            Ok(Err(source)) => return Err(DeliveryError::Connect { remote, source }),
            Ok(Ok(tcp)) => tcp,
        };
        // A connection to a port of this host where nothing listens can meet itself:
        // when the kernel picks that same port as the source, TCP's simultaneous open
        // connects the socket to itself, and the greeting would be waited for until the
        // timeout. Go's dialer checks for this too. Nothing listens there: refused.
        if tcp.local_addr().ok() == Some(addr) {
            return Err(DeliveryError::Connect {
                remote,
                source: std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "connected to itself (nothing listens on that port)",
                ),
            });
        }
        // Commands are small and pipelined in one write: do not wait for ACKs.
        let _ = tcp.set_nodelay(true);
        Self::greet(ClientStream::tcp(tcp), remote, config).await
    }

    /// Connects to a unix socket (`lmtp:unix:/path`, usually with `lmtp` set) and reads
    /// the greeting. STARTTLS is not possible over it.
    pub async fn connect_unix(path: &Path, config: &ClientConfig) -> Result<Self, DeliveryError> {
        let remote = Remote::Unix(path.to_path_buf());
        let unix =
            match tokio::time::timeout(config.connect_timeout, UnixStream::connect(path)).await {
                Err(_) => return Err(DeliveryError::Timeout { step: "connect" }),
                Ok(Err(source)) => return Err(DeliveryError::Connect { remote, source }),
                Ok(Ok(unix)) => unix,
            };
        Self::greet(ClientStream::unix(unix), remote, config).await
    }

    /// [`SmtpConnection::connect`] or [`SmtpConnection::connect_unix`].
    pub async fn connect_to(remote: &Remote, config: &ClientConfig) -> Result<Self, DeliveryError> {
        match remote {
            Remote::Inet(addr) => Self::connect(*addr, config).await,
            Remote::Unix(path) => Self::connect_unix(path, config).await,
        }
    }

    /// The TLS version and cipher suite, once STARTTLS succeeded.
    pub fn tls_description(&self) -> Option<String> {
        self.stream.get_ref().tls_description()
    }
}

impl<S: SmtpStream> SmtpConnection<S> {
    /// Takes over an established stream (a test's in-memory one, say) and reads the
    /// greeting.
    pub async fn greet(
        stream: S,
        remote: impl Into<Remote>,
        config: &ClientConfig,
    ) -> Result<Self, DeliveryError> {
        let remote = remote.into();
        let mut conn = SmtpConnection {
            stream: BufReader::with_capacity(8 * 1024, stream),
            config: config.clone(),
            remote,
            greeting: String::new(),
            caps: Capabilities::default(),
            state: State::Greeted,
            authenticated: false,
        };
        let raw = conn.reply("greeting", config.command_timeout).await?;
        let reply = raw.to_reply();
        if reply.code != 220 {
            conn.state = State::Broken;
            return Err(DeliveryError::rejected("greeting", reply));
        }
        conn.greeting = reply.text;
        debug!(remote = %conn.remote, greeting = %crate::logsafe::esc(&conn.greeting), "Connected.");
        Ok(conn)
    }

    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// TLS protects the connection (after STARTTLS).
    pub fn is_encrypted(&self) -> bool {
        self.stream.get_ref().is_encrypted()
    }

    /// AUTH succeeded on this connection.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// False once the connection cannot carry another transaction.
    pub fn is_usable(&self) -> bool {
        self.state != State::Broken
    }

    /// EHLO, falling back to HELO when the server does not know EHLO (5xx); LHLO with
    /// LMTP. Then, as `tls` says, STARTTLS and EHLO again; then AUTH when `auth` is set
    /// and the server offers it. The capabilities are those of the last EHLO.
    pub async fn ehlo(&mut self) -> Result<&Capabilities, DeliveryError> {
        let r = self.hello().await;
        self.note(r)?;
        self.state = State::Ready;
        Ok(&self.caps)
    }

    async fn hello(&mut self) -> Result<(), DeliveryError> {
        self.ehlo_inner().await?;
        if let Some((tls, name)) = self.tls_plan()? {
            self.starttls(tls, name).await?;
            self.ehlo_inner().await?;
        }
        self.authenticate().await
    }

    /// What STARTTLS needs (the rustls configuration and the server name) when it is to
    /// be done now, `None` when it is not; an error when TLS is needed and impossible.
    fn tls_plan(
        &self,
    ) -> Result<Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>, DeliveryError> {
        let mode = self.config.tls;
        if mode == TlsMode::None || self.stream.get_ref().is_encrypted() {
            return Ok(None);
        }
        let tls_fail = |result, message: String| DeliveryError::Tls {
            message,
            result,
            plaintext_retry: mode == TlsMode::Opportunistic,
        };
        let fail = |message| tls_fail(super::tls_rpt::ResultType::ValidationFailure, message);
        let Some(tls) = self.config.tls_check.clone().or_else(|| {
            self.config
                .tls_client
                .as_ref()
                .and_then(|c| c.config_for(mode))
        }) else {
            return Err(fail(format!(
                "TLS mode {mode} but no TLS client is configured (ClientConfig::tls_client)"
            )));
        };
        let name = match &self.config.tls_name {
            Some(n) => {
                let n = n.trim_end_matches('.');
                ServerName::try_from(n.to_string())
                    .map_err(|_| fail(format!("{n:?} is not a valid TLS server name")))?
            }
            None if mode == TlsMode::Verify && self.config.tls_check.is_none() => {
                return Err(fail(
                    "TLS mode verify needs the server's host name to check the certificate \
                     against, and none is set (tls_name)"
                        .into(),
                ));
            }
            // No name: no SNI (rustls sends none for an IP address); nothing is verified.
            None => match self.remote.ip() {
                Some(ip) => ServerName::IpAddress(ip.into()),
                None => ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
            },
        };
        if !self.caps.starttls {
            if mode == TlsMode::Opportunistic {
                debug!(remote = %self.remote, "STARTTLS not offered, going on in plaintext.");
                return Ok(None);
            }
            return Err(tls_fail(
                super::tls_rpt::ResultType::StarttlsNotSupported,
                format!("TLS is required (tls mode {mode}) but the server does not offer STARTTLS"),
            ));
        }
        Ok(Some((tls, name)))
    }

    /// STARTTLS, its 220, and the handshake.
    async fn starttls(
        &mut self,
        tls: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<(), DeliveryError> {
        let plaintext_retry = self.config.tls == TlsMode::Opportunistic;
        use super::tls_rpt::ResultType;
        let fail = |result: ResultType, message: String| DeliveryError::Tls {
            message,
            result,
            plaintext_retry,
        };
        let injected = || {
            DeliveryError::Protocol(
                "the server sent data it was not asked for around STARTTLS (a response \
                 injection attempt?); not starting TLS"
                    .into(),
            )
        };
        if !self.stream.buffer().is_empty() {
            return Err(injected());
        }
        let reply = self.command("STARTTLS", b"STARTTLS\r\n").await?.to_reply();
        if reply.code != 220 {
            return Err(fail(
                ResultType::StarttlsNotSupported,
                format!("the server refused STARTTLS: {reply}"),
            ));
        }
        // Anything already read after the 220 was sent in plaintext before the
        // handshake and must not be taken as coming over TLS (CVE-2011-0411).
        if !self.stream.buffer().is_empty() {
            return Err(injected());
        }
        let handshake = self.stream.get_mut().start_tls(tls, name);
        match tokio::time::timeout(self.config.command_timeout, handshake).await {
            Err(_) => {
                crate::metrics::get().tls_failed(false);
                Err(fail(
                    ResultType::ValidationFailure,
                    "the TLS handshake timed out".into(),
                ))
            }
            Ok(Err(e)) => {
                crate::metrics::get().tls_failed(false);
                let result = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .map_or(ResultType::ValidationFailure, ResultType::of_handshake);
                Err(fail(
                    result,
                    format!("the TLS handshake failed: {}", handshake_failure(&e)),
                ))
            }
            Ok(Ok(())) => {
                // RFC 3207: forget everything learnt before TLS.
                self.caps = Capabilities::default();
                self.authenticated = false;
                Ok(())
            }
        }
    }

    /// AUTH PLAIN (preferred) or LOGIN when credentials are set and the server offers
    /// AUTH; nothing when it does not (as Postfix).
    async fn authenticate(&mut self) -> Result<(), DeliveryError> {
        let Some(creds) = self.config.auth.clone() else {
            return Ok(());
        };
        if self.authenticated {
            return Ok(());
        }
        let fail = |message: String, reply: Option<Reply>| DeliveryError::Auth { message, reply };
        if self.caps.auth.is_empty() {
            debug!(remote = %self.remote, "AUTH not offered, going on without.");
            return Ok(());
        }
        // A connection whose TLS policy was not met never gets here (the policy's
        // failure ends it first); this guards the credentials all the same.
        if !self.is_encrypted() && (self.config.tls.is_mandatory() || !self.config.auth_plaintext) {
            return Err(fail(
                "refusing to send credentials over an unencrypted connection (use \
                 tls=\"required\")"
                    .into(),
                None,
            ));
        }
        let offers = |m: &str| self.caps.auth.iter().any(|a| a == m);
        let mechanism = if offers("PLAIN") {
            "PLAIN"
        } else if offers("LOGIN") {
            "LOGIN"
        } else {
            return Err(fail(
                format!(
                    "no AUTH mechanism in common (server offers: {}; we support: PLAIN, LOGIN)",
                    self.caps.auth.join(" ")
                ),
                None,
            ));
        };
        let refused = |reply: Reply| {
            fail(
                format!(
                    "authentication as {:?} with {mechanism} failed: {reply}",
                    creds.user
                ),
                Some(reply),
            )
        };
        // Neither the password nor its base64 form is ever logged.
        let reply = if mechanism == "PLAIN" {
            if creds.user.contains('\0') || creds.password.contains('\0') {
                return Err(fail(
                    "the user name or password contains a NUL byte, which AUTH PLAIN cannot carry"
                        .into(),
                    None,
                ));
            }
            let blob = BASE64.encode(format!("\0{}\0{}", creds.user, creds.password));
            let mut reply = self
                .command("AUTH", format!("AUTH PLAIN {blob}\r\n").as_bytes())
                .await?
                .to_reply();
            if reply.code == 334 {
                // A server that ignored the initial response asks for it.
                reply = self
                    .command("AUTH", format!("{blob}\r\n").as_bytes())
                    .await?
                    .to_reply();
            }
            reply
        } else {
            let mut reply = self.command("AUTH", b"AUTH LOGIN\r\n").await?.to_reply();
            for secret in [&creds.user, &creds.password] {
                if reply.code != 334 {
                    return Err(refused(reply));
                }
                let line = format!("{}\r\n", BASE64.encode(secret));
                reply = self.command("AUTH", line.as_bytes()).await?.to_reply();
            }
            reply
        };
        if reply.code != 235 {
            return Err(refused(reply));
        }
        self.authenticated = true;
        debug!(remote = %self.remote, user = %creds.user, mechanism, "Authenticated.");
        Ok(())
    }

    async fn ehlo_inner(&mut self) -> Result<(), DeliveryError> {
        let verb = if self.config.lmtp { "LHLO" } else { "EHLO" };
        let cmd = format!("{verb} {}\r\n", self.config.helo_name);
        let raw = self.command(verb, cmd.as_bytes()).await?;
        let reply = raw.to_reply();
        if reply.is_positive() {
            self.caps = Capabilities::parse(&raw);
            if self.config.loop_detect {
                let name = reply.text.split_whitespace().next().unwrap_or("");
                if name.eq_ignore_ascii_case(self.config.helo_name.trim_end_matches('.')) {
                    return Err(DeliveryError::Loop {
                        name: name.to_owned(),
                    });
                }
            }
            return Ok(());
        }
        if self.config.lmtp || !reply.is_permanent() {
            return Err(DeliveryError::rejected(verb, reply));
        }
        debug!(remote = %self.remote, reply = %crate::logsafe::esc(&reply), "EHLO refused, trying HELO.");
        let cmd = format!("HELO {}\r\n", self.config.helo_name);
        let reply = self.command("HELO", cmd.as_bytes()).await?.to_reply();
        if !reply.is_positive() {
            return Err(DeliveryError::rejected("HELO", reply));
        }
        self.caps = Capabilities::default();
        Ok(())
    }

    /// Sends one message to all of `envelope`'s recipients, pipelined when the server
    /// offers PIPELINING. `Ok` holds one outcome per recipient (some may have failed at
    /// RCPT, or with LMTP after the body); `Err` means no recipient got the message.
    pub async fn send_transaction(
        &mut self,
        envelope: &Envelope<'_>,
        message: &[u8],
    ) -> Result<Vec<RcptOutcome>, DeliveryError> {
        match self.state {
            State::Broken => {
                return Err(DeliveryError::Protocol(
                    "the connection is no longer usable".into(),
                ));
            }
            State::Greeted => {
                self.ehlo().await?;
            }
            State::NeedsRset => {
                let r = self.rset().await;
                self.note(r)?;
            }
            State::Ready => {}
        }
        let r = self.transaction(envelope, message).await;
        self.note(r)
    }

    /// Says QUIT and closes; errors are of no interest any more.
    pub async fn quit(mut self) {
        if self.state != State::Broken {
            let _ = self.command("QUIT", b"QUIT\r\n").await;
        }
        let _ = self.stream.get_mut().shutdown().await;
    }

    /// Records what an error means for the connection.
    fn note<T>(&mut self, r: Result<T, DeliveryError>) -> Result<T, DeliveryError> {
        if let Err(e) = &r {
            self.state = match e {
                DeliveryError::Rejected { reply, .. } if reply.code != 421 => match self.state {
                    State::Greeted | State::Broken => self.state,
                    _ => State::NeedsRset,
                },
                _ => State::Broken,
            };
        }
        r
    }

    async fn rset(&mut self) -> Result<(), DeliveryError> {
        let reply = self.command("RSET", b"RSET\r\n").await?.to_reply();
        if !reply.is_positive() {
            return Err(DeliveryError::Protocol(format!("RSET refused: {reply}")));
        }
        self.state = State::Ready;
        Ok(())
    }

    async fn transaction(
        &mut self,
        envelope: &Envelope<'_>,
        message: &[u8],
    ) -> Result<Vec<RcptOutcome>, DeliveryError> {
        let n = envelope.recipients.len();
        if n == 0 {
            return Err(DeliveryError::Protocol(
                "a transaction needs a recipient".into(),
            ));
        }
        // what came before (connect, greeting, EHLO, TLS, AUTH) was connection setup
        super::delays::connection_ready();
        let mail = self.mail_command(envelope)?;
        self.xforward(envelope).await?;
        // Recipients we cannot even write are refused here; the others are sent.
        let mut outcomes: Vec<Option<RcptOutcome>> = vec![None; n];
        let mut sent = Vec::with_capacity(n);
        let mut rcpts = Vec::new();
        for (i, rcpt) in envelope.recipients.iter().enumerate() {
            if valid_address(rcpt) && !rcpt.is_empty() {
                rcpts.push(format!("RCPT TO:<{rcpt}>\r\n"));
                sent.push(i);
            } else {
                let reply = Reply::local(501, (5, 1, 3), "bad recipient address syntax");
                outcomes[i] = Some(RcptOutcome::PermFail(reply));
            }
        }
        if sent.is_empty() {
            return Ok(outcomes.into_iter().map(Option::unwrap).collect());
        }

        let mut accepted = Vec::with_capacity(sent.len());
        if self.caps.pipelining {
            // RFC 2920: MAIL, every RCPT and DATA in one write, then the replies in order.
            let mut batch = mail.into_bytes();
            for r in &rcpts {
                batch.extend_from_slice(r.as_bytes());
            }
            batch.extend_from_slice(b"DATA\r\n");
            self.write("MAIL", &batch).await?;
            let mail_reply = self
                .reply("MAIL", self.config.command_timeout)
                .await?
                .to_reply();
            if mail_reply.code == 421 {
                return Err(DeliveryError::rejected("MAIL", mail_reply));
            }
            for &i in &sent {
                let reply = self
                    .reply("RCPT", self.config.command_timeout)
                    .await?
                    .to_reply();
                if reply.code == 421 {
                    return Err(DeliveryError::rejected("RCPT", reply));
                }
                if reply.is_positive() && mail_reply.is_positive() {
                    accepted.push(i);
                }
                outcomes[i] = Some(RcptOutcome::from_reply(reply));
            }
            let data_reply = self
                .reply("DATA", self.config.command_timeout)
                .await?
                .to_reply();
            if !mail_reply.is_positive() || accepted.is_empty() {
                if data_reply.is_intermediate() {
                    // A server that said 354 anyway gets an empty message it must refuse.
                    self.command("end of data", b".\r\n").await?;
                }
                self.state = State::NeedsRset;
                if !mail_reply.is_positive() {
                    return Err(DeliveryError::rejected("MAIL", mail_reply));
                }
                return Ok(outcomes.into_iter().map(Option::unwrap).collect());
            }
            if data_reply.code != 354 {
                return Err(DeliveryError::rejected("DATA", data_reply));
            }
        } else {
            let reply = self.command("MAIL", mail.as_bytes()).await?.to_reply();
            if !reply.is_positive() {
                return Err(DeliveryError::rejected("MAIL", reply));
            }
            for (&i, cmd) in sent.iter().zip(&rcpts) {
                let reply = self.command("RCPT", cmd.as_bytes()).await?.to_reply();
                if reply.code == 421 {
                    return Err(DeliveryError::rejected("RCPT", reply));
                }
                if reply.is_positive() {
                    accepted.push(i);
                }
                outcomes[i] = Some(RcptOutcome::from_reply(reply));
            }
            if accepted.is_empty() {
                self.state = State::NeedsRset;
                return Ok(outcomes.into_iter().map(Option::unwrap).collect());
            }
            let reply = self.command("DATA", b"DATA\r\n").await?.to_reply();
            if reply.code != 354 {
                return Err(DeliveryError::rejected("DATA", reply));
            }
        }

        // The body and the final reply (one per accepted recipient with LMTP).
        let data_timeout = self.config.data_timeout;
        let finals = timed("end of data", data_timeout, async {
            self.send_body(message).await?;
            let count = if self.config.lmtp { accepted.len() } else { 1 };
            let mut finals = Vec::with_capacity(count);
            for _ in 0..count {
                let raw = read_reply(&mut self.stream)
                    .await
                    .map_err(|e| DeliveryError::read("end of data", e))?;
                finals.push(raw.to_reply());
            }
            Ok::<_, DeliveryError>(finals)
        })
        .await?;
        for (k, &i) in accepted.iter().enumerate() {
            let reply = finals.get(k).unwrap_or(&finals[0]).clone();
            outcomes[i] = Some(RcptOutcome::from_reply(reply));
        }
        // A 421 closes the connection even when it is the answer to the body.
        self.state = if finals.iter().any(|r| r.code == 421) {
            State::Broken
        } else {
            State::Ready
        };
        let outcomes: Vec<RcptOutcome> = outcomes.into_iter().map(Option::unwrap).collect();
        debug!(
            remote = %self.remote,
            recipients = n,
            delivered = outcomes.iter().filter(|o| matches!(o, RcptOutcome::Delivered(_))).count(),
            "Transaction done."
        );
        Ok(outcomes)
    }

    /// `MAIL FROM:<sender>` with SIZE, BODY and SMTPUTF8 as the server allows, or the
    /// refusal we can tell without asking.
    fn mail_command(&self, envelope: &Envelope<'_>) -> Result<String, DeliveryError> {
        let refuse = |code, enhanced, text| DeliveryError::Rejected {
            step: "MAIL",
            reply: Reply::local(code, enhanced, text),
            permanent: true,
        };
        if !valid_address(envelope.sender) {
            return Err(refuse(501, (5, 1, 7), "bad sender address syntax"));
        }
        if let Some(limit) = self.caps.size
            && limit > 0
            && envelope.size as u64 > limit
        {
            return Err(refuse(
                552,
                (5, 3, 4),
                "message size exceeds fixed maximum message size advertised by server",
            ));
        }
        if envelope.smtputf8 && !self.caps.smtputf8 {
            return Err(refuse(
                550,
                (5, 6, 7),
                "SMTPUTF8 support required but not offered by server",
            ));
        }
        let mut cmd = format!("MAIL FROM:<{}>", envelope.sender);
        if self.caps.size.is_some() {
            cmd.push_str(&format!(" SIZE={}", envelope.size));
        }
        // An 8-bit body goes to a server without 8BITMIME as it is, like Postfix does.
        if envelope.body_8bit && self.caps.eight_bit_mime {
            cmd.push_str(" BODY=8BITMIME");
        }
        if envelope.smtputf8 {
            cmd.push_str(" SMTPUTF8");
        }
        cmd.push_str("\r\n");
        Ok(cmd)
    }

    async fn send_body(&mut self, message: &[u8]) -> Result<(), DeliveryError> {
        let mut encoder = BodyEncoder::new();
        let mut out = Vec::with_capacity(CHUNK + CHUNK / 2);
        let io = |source| DeliveryError::Io {
            step: "end of data",
            source,
        };
        for chunk in message.chunks(CHUNK) {
            out.clear();
            encoder.encode(chunk, &mut out);
            self.stream.get_mut().write_all(&out).await.map_err(io)?;
        }
        out.clear();
        encoder.finish(&mut out);
        let w = self.stream.get_mut();
        w.write_all(&out).await.map_err(io)?;
        w.flush().await.map_err(io)
    }

    /// Writes a command and reads its reply, both within the command timeout.
    /// `XFORWARD NAME=... ADDR=...` for the attributes the server offers, values in
    /// xtext, each command under 512 octets; a refusal fails the transaction.
    async fn xforward(&mut self, envelope: &Envelope<'_>) -> Result<(), DeliveryError> {
        let offered = &self.caps.xforward;
        let attrs: Vec<String> = envelope
            .xforward
            .iter()
            .filter(|(name, _)| offered.iter().any(|o| o == name))
            .map(|(name, value)| format!("{name}={}", xtext(value, 255)))
            .collect();
        let mut commands: Vec<String> = Vec::new();
        for attr in attrs {
            match commands.last_mut() {
                Some(cmd) if cmd.len() + attr.len() + 3 <= 512 => {
                    cmd.push(' ');
                    cmd.push_str(&attr);
                }
                _ => commands.push(format!("XFORWARD {attr}")),
            }
        }
        for mut cmd in commands {
            cmd.push_str("\r\n");
            let reply = self.command("XFORWARD", cmd.as_bytes()).await?.to_reply();
            if !reply.is_positive() {
                return Err(DeliveryError::rejected("XFORWARD", reply));
            }
        }
        Ok(())
    }

    async fn command(
        &mut self,
        step: &'static str,
        bytes: &[u8],
    ) -> Result<RawReply, DeliveryError> {
        self.write(step, bytes).await?;
        self.reply(step, self.config.command_timeout).await
    }

    async fn write(&mut self, step: &'static str, bytes: &[u8]) -> Result<(), DeliveryError> {
        let w = self.stream.get_mut();
        timed(step, self.config.command_timeout, async {
            w.write_all(bytes).await?;
            w.flush().await
        })
        .await
    }

    async fn reply(
        &mut self,
        step: &'static str,
        limit: Duration,
    ) -> Result<RawReply, DeliveryError> {
        match tokio::time::timeout(limit, read_reply(&mut self.stream)).await {
            Err(_) => Err(DeliveryError::Timeout { step }),
            Ok(r) => r.map_err(|e| DeliveryError::read(step, e)),
        }
    }
}

/// Runs `f` within `limit`, turning IO errors into [`DeliveryError::Io`] for `step`.
async fn timed<T, E>(
    step: &'static str,
    limit: Duration,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, DeliveryError>
where
    E: Into<StepError>,
{
    match tokio::time::timeout(limit, f).await {
        Err(_) => Err(DeliveryError::Timeout { step }),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(match e.into() {
            StepError::Io(source) => DeliveryError::Io { step, source },
            StepError::Delivery(d) => d,
        }),
    }
}

/// The errors a timed step may end with.
enum StepError {
    Io(std::io::Error),
    Delivery(DeliveryError),
}

impl From<std::io::Error> for StepError {
    fn from(e: std::io::Error) -> Self {
        StepError::Io(e)
    }
}

impl From<DeliveryError> for StepError {
    fn from(e: DeliveryError) -> Self {
        StepError::Delivery(e)
    }
}

/// An address we can put between `<>` without changing the command: no control
/// characters (CR and LF above all), no angle brackets, no spaces.
fn valid_address(a: &str) -> bool {
    !a.bytes()
        .any(|b| b.is_ascii_control() || b == b'<' || b == b'>' || b == b' ')
}

/// One transaction on a new connection: connect (TCP or unix socket), EHLO (with
/// STARTTLS and AUTH as `config` says), the transaction, QUIT.
pub async fn deliver(
    remote: impl Into<Remote>,
    config: &ClientConfig,
    envelope: &Envelope<'_>,
    message: &[u8],
) -> Result<TransactionResult, DeliveryError> {
    let remote = remote.into();
    let mut conn = SmtpConnection::connect_to(&remote, config).await?;
    let result = async {
        conn.ehlo().await?;
        conn.send_transaction(envelope, message).await
    }
    .await;
    let greeting = conn.greeting().to_string();
    let tls = conn.tls_description();
    let authenticated = conn.is_authenticated();
    conn.quit().await;
    Ok(TransactionResult {
        per_recipient: result?,
        remote,
        greeting,
        tls,
        authenticated,
    })
}

/// RFC 3461 xtext: `+XX` for `+`, `=`, and anything outside `!`..`~`; at most `max`
/// input bytes.
fn xtext(value: &str, max: usize) -> String {
    let mut out = String::with_capacity(value.len().min(max));
    for &b in value.as_bytes().iter().take(max) {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// A failed handshake as the log says it: our own certificate checks' errors (a DANE
/// mismatch, names a certificate lacks) by their sentence, the rest as rustls says them.
fn handshake_failure(e: &std::io::Error) -> String {
    if let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o))) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return o.to_string();
    }
    e.to_string()
}

#[cfg(test)]
mod tests {
    //! Transcripts of STARTTLS and AUTH over an in-memory stream, for what real peers
    //! cannot be made to do (tests/delivery_client.rs has the real ones).

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    /// Plays `script` as the server: for each `(expect, reply)` reads one line, which
    /// must be `expect` (none when empty), then writes `reply`. Returns the lines read.
    fn server(
        script: &'static [(&'static str, &'static str)],
    ) -> (DuplexStream, tokio::task::JoinHandle<Vec<String>>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(server);
            let mut r = tokio::io::BufReader::new(r);
            let mut seen = Vec::new();
            for (expect, reply) in script {
                if !expect.is_empty() {
                    let mut line = String::new();
                    r.read_line(&mut line).await.unwrap();
                    assert_eq!(line.trim_end(), *expect);
                    seen.push(line);
                }
                w.write_all(reply.as_bytes()).await.unwrap();
            }
            seen
        });
        (client, task)
    }

    fn config(tls: TlsMode, auth: bool) -> ClientConfig {
        ClientConfig {
            command_timeout: Duration::from_secs(5),
            tls,
            tls_client: (tls != TlsMode::None).then(|| Arc::new(TlsClient::new(None).unwrap())),
            auth: auth.then(|| Credentials {
                user: "user".into(),
                password: "secret".into(),
            }),
            auth_plaintext: true,
            ..ClientConfig::new("client.test")
        }
    }

    async fn ehlo(
        script: &'static [(&'static str, &'static str)],
        config: &ClientConfig,
    ) -> (Result<Capabilities, DeliveryError>, Vec<String>) {
        let (stream, server) = server(script);
        let addr: SocketAddr = "192.0.2.1:25".parse().unwrap();
        let mut conn = SmtpConnection::greet(stream, addr, config).await.unwrap();
        let r = conn.ehlo().await.cloned();
        drop(conn);
        (r, server.await.unwrap())
    }

    #[test]
    fn auth_mechanisms_are_read_in_both_forms() {
        let raw = RawReply {
            code: 250,
            lines: vec![
                "mx.test".into(),
                "AUTH plain LOGIN".into(),
                "AUTH=LOGIN XOAUTH2".into(),
                "STARTTLS".into(),
            ],
        };
        let caps = Capabilities::parse(&raw);
        assert_eq!(caps.auth, ["PLAIN", "LOGIN", "XOAUTH2"]);
        assert!(caps.starttls);
    }

    #[test]
    fn debug_never_shows_the_password() {
        let mut cfg = config(TlsMode::None, true);
        cfg.auth.as_mut().unwrap().password = "hunter2".into();
        let shown = format!("{cfg:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn auth_plain_and_login_on_the_wire() {
        let (r, seen) = ehlo(
            &[
                ("", "220 fake\r\n"),
                ("EHLO client.test", "250-fake\r\n250 AUTH LOGIN PLAIN\r\n"),
                // base64("\0user\0secret")
                ("AUTH PLAIN AHVzZXIAc2VjcmV0", "235 2.7.0 ok\r\n"),
            ],
            &config(TlsMode::None, true),
        )
        .await;
        r.unwrap();
        assert_eq!(seen.len(), 2);

        let (r, _) = ehlo(
            &[
                ("", "220 fake\r\n"),
                ("EHLO client.test", "250-fake\r\n250 AUTH=LOGIN\r\n"),
                ("AUTH LOGIN", "334 VXNlcm5hbWU6\r\n"),
                ("dXNlcg==", "334 UGFzc3dvcmQ6\r\n"),
                ("c2VjcmV0", "235 2.7.0 ok\r\n"),
            ],
            &config(TlsMode::None, true),
        )
        .await;
        r.unwrap();
    }

    #[tokio::test]
    async fn a_refused_starttls_is_a_tls_failure() {
        let script: &[(&str, &str)] = &[
            ("", "220 fake\r\n"),
            ("EHLO client.test", "250-fake\r\n250 STARTTLS\r\n"),
            ("STARTTLS", "454 4.7.0 TLS not available\r\n"),
        ];
        for (mode, retry) in [(TlsMode::Opportunistic, true), (TlsMode::Required, false)] {
            let (r, _) = ehlo(script, &config(mode, false)).await;
            let err = r.unwrap_err();
            assert!(err.is_tls_failure() && !err.is_permanent(), "{err:?}");
            assert_eq!(err.allows_plaintext_retry(), retry, "{mode}");
            assert!(err.to_string().contains("454 4.7.0"), "{err}");
        }
    }

    #[tokio::test]
    async fn bytes_after_the_starttls_reply_stop_the_handshake() {
        let (r, seen) = ehlo(
            &[
                ("", "220 fake\r\n"),
                ("EHLO client.test", "250-fake\r\n250 STARTTLS\r\n"),
                ("STARTTLS", "220 go\r\n250-fake\r\n250 AUTH PLAIN\r\n"),
            ],
            &config(TlsMode::Opportunistic, false),
        )
        .await;
        assert!(
            matches!(&r, Err(DeliveryError::Protocol(m)) if m.contains("injection")),
            "{r:?}"
        );
        assert_eq!(seen.len(), 2);
    }

    #[tokio::test]
    async fn tls_settings_that_cannot_work_fail_before_starttls() {
        let script: &[(&str, &str)] = &[
            ("", "220 fake\r\n"),
            ("EHLO client.test", "250-fake\r\n250 STARTTLS\r\n"),
        ];
        let (r, _) = ehlo(script, &config(TlsMode::Verify, false)).await;
        assert!(r.unwrap_err().to_string().contains("(tls_name)"));
        let mut cfg = config(TlsMode::Required, false);
        cfg.tls_client = None;
        let (r, _) = ehlo(script, &cfg).await;
        assert!(r.unwrap_err().to_string().contains("no TLS client"));
    }

    #[tokio::test]
    async fn auth_without_a_common_mechanism_or_over_plaintext() {
        let script: &[(&str, &str)] = &[
            ("", "220 fake\r\n"),
            (
                "EHLO client.test",
                "250-fake\r\n250 AUTH CRAM-MD5 GSSAPI\r\n",
            ),
        ];
        let (r, _) = ehlo(script, &config(TlsMode::None, true)).await;
        assert_eq!(
            r.unwrap_err().to_string(),
            "no AUTH mechanism in common (server offers: CRAM-MD5 GSSAPI; we support: PLAIN, LOGIN)"
        );
        let mut cfg = config(TlsMode::None, true);
        cfg.auth_plaintext = false;
        let (r, seen) = ehlo(script, &cfg).await;
        assert!(matches!(r, Err(DeliveryError::Auth { .. })));
        assert_eq!(seen.len(), 1, "sent more than EHLO: {seen:?}");
    }
}
