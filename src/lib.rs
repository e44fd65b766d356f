//! mtad — a mail relay whose policy is code.
//!
//! A message travels through these modules, in this order (see `docs/` and
//! `../shared/DESIGN.md` for the whole picture):
//!
//! - [`config`]: reads the KDL configuration into typed, validated settings; every
//!   error is collected and reported with file:line:col.
//! - [`lookup`]: named sets (networks, domains) and tables (inline, Postfix-format
//!   files, regexp, CIDR, SQL) that rules refer to.
//! - [`policy`]: compiles settings into an immutable [`policy::Pipeline`], shared by
//!   `Arc` and consulted by each SMTP stage; every decision is a function there.
//! - [`smtp`]: listeners and sessions; each command calls the matching stage.
//! - [`queue`]: the spool; nothing is acknowledged before it is on stable storage. It
//!   is where inbound and outbound meet.
//! - [`delivery`]: the scheduler and the outbound SMTP/LMTP/Maildir transports, with
//!   outcomes per recipient.
//! - [`auth`]: SMTP AUTH's server side: SASL PLAIN/LOGIN decoding and the `users`
//!   tables (Dovecot passwd-files or SQL) that credentials are verified against.
//! - [`mailauth`]: every mail-auth call: SPF, DKIM, DMARC, ARC and iprev checks of
//!   incoming mail, DKIM signing and ARC sealing of outgoing mail.
//! - [`milter`]: the milter client (Sendmail's filter protocol, version 6): the wire
//!   format and one connection to one filter; the SMTP session drives it.
//! - [`net`] and [`message`]: leaves that others share: the resolver, TLS material and
//!   streams; headers, edits and MIME.
//! - [`metrics`]: what the daemon counts, and the Prometheus endpoint.
//! - [`cluster`]: the state several nodes share through Redis (rate limits across the
//!   nodes, connection leases, greylisting's records, the content-filter loop record,
//!   which is in the process's memory without a cluster), and what a node does while
//!   Redis does not answer.
//! - [`import`]: `mtactl import postfix`: a Postfix configuration directory read and
//!   translated into an mtad configuration, its test suite and a report.
//! - [`control`]: the operator side and the composition root: the daemon's wiring
//!   ([`control::daemon`]), who it runs as ([`control::privileges`]), systemd's
//!   readiness protocol ([`control::notify`]), reload, the control socket, `mtactl`,
//!   the man pages and completions ([`control::manual`]).
//! - [`logsafe`]: escaping for logged values that come from clients and scripts.
//! - [`maillog`]: the mail log in Postfix's line grammar (what pflogsumm, logwatch and
//!   fail2ban read); [`control::log`] writes it to stderr, syslog or the journal.
//! - [`position`]: byte offsets → file:line:col, for every message that points into
//!   a file we read (configuration, tables, test suites). A leaf.
//!
//! # One-way doors
//!
//! A module may import only those before it in this list (leaves first), never one
//! after it; `tests/architecture.rs` checks every `crate::` path against the same table:
//!
//! | module | may import |
//! | --- | --- |
//! | `logsafe`, `message`, `net`, `position` | nothing |
//! | `maillog` | logsafe |
//! | `milter` | logsafe |
//! | `lookup` | logsafe, message, net, position |
//! | `queue` | logsafe, message |
//! | `auth` | logsafe, lookup |
//! | `mailauth` | logsafe, lookup, message, net |
//! | `config` | the above but queue |
//! | `metrics` | logsafe, config, mailauth |
//! | `cluster` | logsafe, config, metrics |
//! | `policy` | the above but queue, and maillog |
//! | `smtp`, `delivery` | the above, queue and maillog; never each other, nor control |
//! | `import` | logsafe, lookup, message, net, position, config |
//! | `control` | everything |
//!
//! So config ← policy ← smtp/delivery ← control; queue, lookup, net, message and position know
//! none of the modules above them; smtp and delivery meet only through the queue and
//! the wiring in control.
#![forbid(unsafe_code)]

pub mod auth;
pub mod cluster;
pub mod config;
pub mod control;
pub mod delivery;
pub mod import;
pub mod logsafe;
pub mod lookup;
pub mod mailauth;
pub mod maillog;
pub mod message;
pub mod metrics;
pub mod milter;
pub mod net;
pub mod policy;
pub mod position;
pub mod queue;
pub mod smtp;
