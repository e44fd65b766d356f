//! Outbound SMTP and LMTP: one client transaction, done right (docs/delivery.md).
//!
//! - [`client`]: [`SmtpConnection`] (connect, EHLO with HELO fallback, transactions
//!   pipelined when offered, QUIT) and [`deliver`], one transaction on a new connection.
//! - [`body`]: the DATA body on the wire: dot-stuffed, every line ending CRLF.
//! - [`reply`]: server replies, read with bounded memory.
//! - [`crate::net::stream`]: the connection's stream (TCP, TLS after STARTTLS, unix socket).
//! - [`tls`]: [`TlsMode`] and [`TlsClient`], the rustls configurations (ring).
//! - [`crate::net::dns`]: next hops (MX, addresses).
//! - [`hops`]: from a route to hosts: the fallback chain, connection reuse, concurrency.
//! - [`scheduler`]: the queue manager: attempts, retries, bounces, the delivery log.
//! - [`dsn`]: bounces and delay warnings (RFC 3464); [`maildir`]: the `local` transport.
//! - [`tls_policy`], [`dane`], [`mta_sts`]: the TLS policy of each connection;
//!   [`tls_rpt`]: what became of it, reported to the domains that ask (RFC 8460).

pub mod body;
pub mod client;
pub mod dane;
pub mod delays;
pub mod dsn;
pub mod hops;
pub mod maildir;
pub mod mta_sts;
pub mod reply;
pub mod scheduler;
pub mod tls;
pub mod tls_policy;
pub mod tls_rpt;

#[cfg(test)]
mod tests;

pub use crate::net::stream::{ClientStream, Remote, SmtpStream};
pub use body::BodyEncoder;
pub use client::{
    Capabilities, ClientConfig, Credentials, DeliveryError, Envelope, RcptOutcome, SmtpConnection,
    TransactionResult, deliver,
};
pub use reply::{EnhancedCode, Reply};
pub use tls::{TlsClient, TlsMode};
