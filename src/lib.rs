//! mtad — a mail relay whose policy is code.
//!
//! A message travels through these modules, in this order (see `docs/` and
//! `../shared/DESIGN.md` for the whole picture):
//!
//! - [`config`]: reads the KDL configuration into typed, validated settings; every
//!   error is collected and reported with file:line:col.
//! - [`lookup`]: named sets (networks, domains) that rules refer to.
//! - [`policy`]: compiles settings into an immutable [`policy::Pipeline`], shared by
//!   `Arc` and consulted by each SMTP stage.
//! - [`smtp`]: listeners and sessions; each command calls the matching stage.
//! - [`queue`]: the spool; nothing is acknowledged before it is on stable storage.
//! - [`auth`]: SMTP AUTH's server side: SASL PLAIN/LOGIN decoding and the `users`
//!   tables (Dovecot passwd-files or SQL) that credentials are verified against.
//! - [`delivery`]: the outbound SMTP/LMTP client, with outcomes per recipient.
//! - [`dkim`]: DKIM signing of what delivery sends (every mail-auth call is there).
//! - [`control`]: the operator side (`mtactl`): config checks, queue inspection,
//!   reload and status over the control socket.
//! - [`metrics`]: what the daemon counts, and the Prometheus endpoint.
//! - [`logsafe`]: escaping for logged values that come from clients and scripts.
//! - [`position`]: byte offsets → file:line:col, for every message that points into
//!   a file we read (configuration, tables, test suites). A leaf.
//!
//! Dependencies point one way: config ← policy ← smtp; queue knows neither smtp nor
//! policy; control is the only module that reaches everything.
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod control;
pub mod delivery;
pub mod dkim;
pub mod logsafe;
pub mod lookup;
pub mod mailauth;
pub mod metrics;
pub mod policy;
pub mod position;
pub mod queue;
pub mod smtp;
