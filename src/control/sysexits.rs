//! Exit statuses from sysexits.h, for the commands that answer to sendmail's names
//! (`sendmail`, `mailq`, `newaliases`), whose callers read them as Sendmail and Postfix set them.

/// The command completed.
pub const EX_OK: u8 = 0;
/// The command line is wrong (`sendmail`: no recipients, a bad option value).
pub const EX_USAGE: u8 = 64;
/// The input is wrong (`sendmail`: the message is too large, an address is not one).
pub const EX_DATAERR: u8 = 65;
/// An internal error.
pub const EX_SOFTWARE: u8 = 70;
/// A file cannot be created (`sendmail`: the maildrop).
pub const EX_CANTCREAT: u8 = 73;
/// Reading or writing failed (`sendmail`: standard input).
pub const EX_IOERR: u8 = 74;
/// Try again later.
pub const EX_TEMPFAIL: u8 = 75;
/// Not allowed (`sendmail`: this user may not submit, or not this sender).
pub const EX_NOPERM: u8 = 77;
/// A service is unavailable: the queue cannot be read, the daemon cannot be reached.
pub const EX_UNAVAILABLE: u8 = 69;
/// A configuration error (the configuration or a file it names, such as aliases).
pub const EX_CONFIG: u8 = 78;
