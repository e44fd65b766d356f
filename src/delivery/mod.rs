//! Outbound SMTP and LMTP: one client transaction, done right (docs/delivery.md).
//!
//! - [`client`]: [`SmtpConnection`] (connect, EHLO with HELO fallback, transactions
//!   pipelined when offered, QUIT) and [`deliver`], one transaction on a new connection.
//! - [`body`]: the DATA body on the wire: dot-stuffed, every line ending CRLF.
//! - [`reply`]: server replies, read with bounded memory.
//!
//! Scheduling, MX lookups, TLS and AUTH build on this and come later.

pub mod body;
pub mod client;
pub mod dns;
pub mod dsn;
pub mod hops;
pub mod maildir;
pub mod reply;
pub mod scheduler;
pub mod tls;

#[cfg(test)]
mod tests;

pub use body::BodyEncoder;
pub use client::{
    Capabilities, ClientConfig, DeliveryError, Envelope, RcptOutcome, SmtpConnection,
    TransactionResult, deliver,
};
pub use reply::{EnhancedCode, Reply};
