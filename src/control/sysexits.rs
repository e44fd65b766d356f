//! Exit statuses from sysexits.h, for the commands that answer to sendmail's names
//! (`mailq`, `newaliases`), whose callers read them as Sendmail and Postfix set them.

/// The command completed.
pub const EX_OK: u8 = 0;
/// A service is unavailable: the queue cannot be read, the daemon cannot be reached.
pub const EX_UNAVAILABLE: u8 = 69;
/// A configuration error (the configuration or a file it names, such as aliases).
pub const EX_CONFIG: u8 = 78;
