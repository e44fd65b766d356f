//! The network pieces that the session, delivery, mail authentication and the
//! configuration checks share: the DNS resolver ([`dns`]), TLS material and what a
//! session records of its handshake ([`tls`]), the byte streams SMTP runs over
//! ([`stream`]), DNSSEC-validated lookups for DANE ([`dnssec`]), MTA-STS ([`mta_sts`])
//! and TLS reporting's `_smtp._tls` record ([`tls_rpt`]).
//!
//! A leaf: it knows no other module of mtad.

pub mod dns;
pub mod dnssec;
pub mod mta_sts;
pub mod stream;
pub mod tls;
pub mod tls_rpt;
