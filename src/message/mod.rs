//! The message as mtad reads and rewrites it, shared by policy, the session, mail
//! authentication and delivery: its header block as Postfix's cleanup sees it
//! ([`Headers`]), its MIME structure ([`mime`]), and the edits the data stage makes
//! ([`HeaderChange`] from hooks, [`RawEdit`] from header_checks and body_checks).
//!
//! A leaf: it knows no other module of mtad.

mod edits;
mod headers;
pub mod mime;

pub use edits::{HeaderChange, RawEdit, apply_header_edits, apply_raw_edits};
pub use headers::{HeaderLine, Headers, NO_HEADERS, parse_headers};
