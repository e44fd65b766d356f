//! The milter wire format (Sendmail's libmilter `mfdef.h`, protocol version 6): every
//! packet is a 32-bit big-endian length, a command byte, and the command's data; the
//! length counts the command byte and the data.
//!
//! Commands go from us to the filter ([`Command`] builds them); replies come back
//! ([`parse_reply`] reads them). A reply is hostile input: its length is checked
//! against [`MAX_PACKET`] before a byte of it is stored, every string must end in its
//! NUL, and nothing unexpected is accepted.

use std::fmt;

/// The protocol version we speak (Sendmail 8.14+, Postfix 2.6+).
pub const VERSION: u32 = 6;

/// The largest packet (command byte and data) we read: libmilter's
/// `MILTER_MAX_DATA_SIZE` (65,535 data bytes) and the command byte. We never offer
/// the larger sizes (`SMFIP_MDS_256K`, `SMFIP_MDS_1M`), so a filter may not send more.
pub const MAX_PACKET: usize = 65_536;

/// Body chunks we send are at most this long (`MILTER_CHUNK_SIZE`).
pub const CHUNK: usize = 65_535;

/// Actions a filter may ask for (`SMFIF_*`): what it may change.
pub mod action {
    pub const ADDHDRS: u32 = 0x01;
    pub const CHGBODY: u32 = 0x02;
    pub const ADDRCPT: u32 = 0x04;
    pub const DELRCPT: u32 = 0x08;
    pub const CHGHDRS: u32 = 0x10;
    pub const QUARANTINE: u32 = 0x20;
    pub const CHGFROM: u32 = 0x40;
    pub const ADDRCPT_PAR: u32 = 0x80;
    pub const SETSYMLIST: u32 = 0x100;
    /// Every action of version 6: what we offer.
    pub const ALL: u32 = 0x1FF;
}

/// Protocol steps (`SMFIP_*`): what the filter does not want sent (`NO*`), what it
/// will not answer (`NR_*`), and what it understands.
pub mod step {
    pub const NOCONNECT: u32 = 0x1;
    pub const NOHELO: u32 = 0x2;
    pub const NOMAIL: u32 = 0x4;
    pub const NORCPT: u32 = 0x8;
    pub const NOBODY: u32 = 0x10;
    pub const NOHDRS: u32 = 0x20;
    pub const NOEOH: u32 = 0x40;
    pub const NR_HDR: u32 = 0x80;
    pub const NOUNKNOWN: u32 = 0x100;
    pub const NODATA: u32 = 0x200;
    pub const SKIP: u32 = 0x400;
    pub const RCPT_REJ: u32 = 0x800;
    pub const NR_CONN: u32 = 0x1000;
    pub const NR_HELO: u32 = 0x2000;
    pub const NR_MAIL: u32 = 0x4000;
    pub const NR_RCPT: u32 = 0x8000;
    pub const NR_DATA: u32 = 0x10000;
    pub const NR_UNKN: u32 = 0x20000;
    pub const NR_EOH: u32 = 0x40000;
    pub const NR_BODY: u32 = 0x80000;
    pub const HDR_LEADSPC: u32 = 0x100000;
    /// Every step of version 6: what we offer (not the `MDS_*` sizes).
    pub const ALL: u32 = 0x1F_FFFF;
}

/// A command we send, built into its packet.
pub struct Command;

impl Command {
    fn packet(code: u8, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + data.len());
        out.extend_from_slice(&((data.len() + 1) as u32).to_be_bytes());
        out.push(code);
        out.extend_from_slice(data);
        out
    }

    fn strings(code: u8, parts: &[&[u8]]) -> Vec<u8> {
        let mut data = Vec::new();
        for p in parts {
            data.extend(p.iter().copied().filter(|&b| b != 0));
            data.push(0);
        }
        Self::packet(code, &data)
    }

    /// `SMFIC_OPTNEG`: our version, the actions and steps we offer.
    pub fn optneg(actions: u32, steps: u32) -> Vec<u8> {
        let mut data = Vec::with_capacity(12);
        data.extend_from_slice(&VERSION.to_be_bytes());
        data.extend_from_slice(&actions.to_be_bytes());
        data.extend_from_slice(&steps.to_be_bytes());
        Self::packet(b'O', &data)
    }

    /// `SMFIC_MACRO`: the macros for the command `for_command` that follows.
    pub fn macros(for_command: u8, pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut data = vec![for_command];
        for (name, value) in pairs {
            for s in [name.as_bytes(), value.as_bytes()] {
                data.extend(s.iter().copied().filter(|&b| b != 0));
                data.push(0);
            }
        }
        Self::packet(b'D', &data)
    }

    /// `SMFIC_CONNECT`: the client's name, and its address family, port and address
    /// (`'4'`, `'6'`; `'U'` with no port nor address for a local submission).
    pub fn connect(hostname: &str, addr: Option<std::net::SocketAddr>) -> Vec<u8> {
        let mut data = Vec::new();
        data.extend(hostname.bytes().filter(|&b| b != 0));
        data.push(0);
        match addr {
            Some(a) => {
                data.push(if a.is_ipv4() { b'4' } else { b'6' });
                data.extend_from_slice(&a.port().to_be_bytes());
                data.extend_from_slice(a.ip().to_string().as_bytes());
                data.push(0);
            }
            None => data.push(b'U'),
        }
        Self::packet(b'C', &data)
    }

    pub fn helo(name: &str) -> Vec<u8> {
        Self::strings(b'H', &[name.as_bytes()])
    }

    /// `SMFIC_MAIL`: `<sender>` and its ESMTP parameters, each a string.
    pub fn mail(args: &[&str]) -> Vec<u8> {
        let parts: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        Self::strings(b'M', &parts)
    }

    /// `SMFIC_RCPT`: `<recipient>` and its ESMTP parameters.
    pub fn rcpt(args: &[&str]) -> Vec<u8> {
        let parts: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        Self::strings(b'R', &parts)
    }

    pub fn data() -> Vec<u8> {
        Self::packet(b'T', &[])
    }

    pub fn header(name: &[u8], value: &[u8]) -> Vec<u8> {
        Self::strings(b'L', &[name, value])
    }

    pub fn eoh() -> Vec<u8> {
        Self::packet(b'N', &[])
    }

    /// `SMFIC_BODY`: one chunk of at most [`CHUNK`] bytes.
    pub fn body(chunk: &[u8]) -> Vec<u8> {
        Self::packet(b'B', chunk)
    }

    pub fn end_of_body() -> Vec<u8> {
        Self::packet(b'E', &[])
    }

    pub fn abort() -> Vec<u8> {
        Self::packet(b'A', &[])
    }

    pub fn quit() -> Vec<u8> {
        Self::packet(b'Q', &[])
    }
}

/// The stages a filter's macro lists are for (`SMFIM_*`), in the protocol's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MacroStage {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Data,
    EndOfMessage,
    EndOfHeaders,
}

impl MacroStage {
    pub const ALL: [MacroStage; 7] = [
        MacroStage::Connect,
        MacroStage::Helo,
        MacroStage::Mail,
        MacroStage::Rcpt,
        MacroStage::Data,
        MacroStage::EndOfMessage,
        MacroStage::EndOfHeaders,
    ];

    /// The command the macros go before.
    pub fn command(self) -> u8 {
        match self {
            MacroStage::Connect => b'C',
            MacroStage::Helo => b'H',
            MacroStage::Mail => b'M',
            MacroStage::Rcpt => b'R',
            MacroStage::Data => b'T',
            MacroStage::EndOfMessage => b'E',
            MacroStage::EndOfHeaders => b'N',
        }
    }

    /// The name in the configuration (`macros "connect" "..."`), as Postfix's
    /// `milter_*_macros` parameters name them.
    pub fn name(self) -> &'static str {
        match self {
            MacroStage::Connect => "connect",
            MacroStage::Helo => "helo",
            MacroStage::Mail => "mail",
            MacroStage::Rcpt => "rcpt",
            MacroStage::Data => "data",
            MacroStage::EndOfMessage => "end-of-data",
            MacroStage::EndOfHeaders => "end-of-header",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// What a filter negotiated (its `SMFIC_OPTNEG` reply).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub version: u32,
    pub actions: u32,
    pub steps: u32,
    /// `SMFIR_SETSYMLIST`-style lists that came with the reply: the macros the filter
    /// wants at a stage, instead of the configured ones.
    pub macros: Vec<(MacroStage, Vec<String>)>,
}

/// One reply from a filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Negotiate(Negotiated),
    Accept,
    Continue,
    Discard,
    Reject,
    Tempfail,
    /// `SMFIR_REPLYCODE`: the filter's own SMTP reply (checked: see [`parse_reply`]).
    ReplyCode(String),
    Skip,
    Progress,
    /// `SMFIR_SHUTDOWN`: 421, and the session ends.
    Shutdown,
    /// `SMFIR_CONN_FAIL`: the connection fails (421 too).
    ConnFail,
    AddHeader {
        name: String,
        value: String,
    },
    InsertHeader {
        index: u32,
        name: String,
        value: String,
    },
    /// An empty value deletes the header.
    ChangeHeader {
        index: u32,
        name: String,
        value: String,
    },
    ReplaceBody(Vec<u8>),
    AddRcpt {
        rcpt: String,
        args: Option<String>,
    },
    DelRcpt(String),
    ChangeFrom {
        sender: String,
        args: Option<String>,
    },
    Quarantine(String),
}

impl Reply {
    /// A modification summed up for the decision log (`add-header NAME: VALUE`,
    /// `delete-header NAME`, `replace-body N bytes`, `add-rcpt <a@b>`...); `None` for
    /// replies that are not modifications.
    pub fn summary(&self) -> Option<String> {
        Some(match self {
            Reply::AddHeader { name, value } => format!("add-header {name}:{value}"),
            Reply::InsertHeader { index, name, value } => {
                format!("insert-header {index} {name}:{value}")
            }
            Reply::ChangeHeader { index, name, value } if value.is_empty() => {
                format!("delete-header {index} {name}")
            }
            Reply::ChangeHeader { index, name, value } => {
                format!("change-header {index} {name}:{value}")
            }
            Reply::ReplaceBody(chunk) => format!("replace-body {} bytes", chunk.len()),
            Reply::AddRcpt { rcpt, .. } => format!("add-rcpt {rcpt}"),
            Reply::DelRcpt(rcpt) => format!("delete-rcpt {rcpt}"),
            Reply::ChangeFrom { sender, .. } => format!("change-from {sender}"),
            Reply::Quarantine(reason) => format!("quarantine {reason}"),
            _ => return None,
        })
    }

    /// The action a modification needs to have been negotiated; `None` for replies
    /// that are not modifications.
    pub fn needs_action(&self) -> Option<u32> {
        Some(match self {
            Reply::AddHeader { .. } => action::ADDHDRS,
            Reply::InsertHeader { .. } => action::ADDHDRS,
            Reply::ChangeHeader { .. } => action::CHGHDRS,
            Reply::ReplaceBody(_) => action::CHGBODY,
            Reply::AddRcpt { args: None, .. } => action::ADDRCPT,
            Reply::AddRcpt { args: Some(_), .. } => action::ADDRCPT_PAR,
            Reply::DelRcpt(_) => action::DELRCPT,
            Reply::ChangeFrom { .. } => action::CHGFROM,
            Reply::Quarantine(_) => action::QUARANTINE,
            _ => return None,
        })
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Reply::Negotiate(_) => "negotiate",
            Reply::Accept => "accept",
            Reply::Continue => "continue",
            Reply::Discard => "discard",
            Reply::Reject => "reject",
            Reply::Tempfail => "tempfail",
            Reply::ReplyCode(_) => "reply",
            Reply::Skip => "skip",
            Reply::Progress => "progress",
            Reply::Shutdown => "shutdown",
            Reply::ConnFail => "connfail",
            Reply::AddHeader { .. } => "add header",
            Reply::InsertHeader { .. } => "insert header",
            Reply::ChangeHeader { .. } => "change header",
            Reply::ReplaceBody(_) => "replace body",
            Reply::AddRcpt { .. } => "add recipient",
            Reply::DelRcpt(_) => "delete recipient",
            Reply::ChangeFrom { .. } => "change sender",
            Reply::Quarantine(_) => "quarantine",
        }
    }
}

/// A reply that breaks the protocol: the filter is then treated as failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("packet length {0} out of bounds (1..={MAX_PACKET})")]
    Length(usize),
    #[error("unknown reply code {0:#04x}")]
    UnknownCode(u8),
    #[error("reply `{code}`: {why}")]
    Malformed { code: char, why: &'static str },
    #[error("reply code text is not a 4xx/5xx SMTP reply")]
    BadReplyCode,
}

fn malformed(code: u8, why: &'static str) -> ProtocolError {
    ProtocolError::Malformed {
        code: code as char,
        why,
    }
}

/// Checks a packet's length field before its data is read.
pub fn check_length(len: u32) -> Result<usize, ProtocolError> {
    let len = len as usize;
    if len == 0 || len > MAX_PACKET {
        return Err(ProtocolError::Length(len));
    }
    Ok(len)
}

/// Splits `data` into exactly `n` NUL-terminated strings (lossy UTF-8), nothing after.
fn strings(code: u8, data: &[u8], min: usize, max: usize) -> Result<Vec<String>, ProtocolError> {
    if data.last() != Some(&0) {
        return Err(malformed(code, "string without its NUL"));
    }
    let parts: Vec<String> = data[..data.len() - 1]
        .split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    if parts.len() < min || parts.len() > max {
        return Err(malformed(code, "wrong number of strings"));
    }
    Ok(parts)
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// A header name a filter may write: printable ASCII but the colon, not empty.
pub(super) fn header_name(code: u8, name: String) -> Result<String, ProtocolError> {
    if name.is_empty()
        || name.len() > 255
        || !name
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b':')
    {
        return Err(malformed(code, "not a header name"));
    }
    Ok(name)
}

/// An envelope address a filter gives (`<a@b>` or `a@b`): one line, no controls.
fn address(code: u8, s: String) -> Result<String, ProtocolError> {
    if s.len() > 1000 || s.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(malformed(code, "not an address"));
    }
    Ok(s)
}

/// A header value: no CR or LF but as a fold (a line break followed by white space;
/// the filter writes it `\n` or `\r\n`), no other control but tab.
pub(super) fn header_value(code: u8, s: String) -> Result<String, ProtocolError> {
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\t' => {}
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {}
            b'\n' if matches!(bytes.get(i + 1), Some(b' ' | b'\t')) => {}
            b if b < 0x20 || b == 0x7f => {
                return Err(malformed(code, "control character in a header value"));
            }
            _ => {}
        }
    }
    Ok(s)
}

/// A `SMFIR_REPLYCODE` text: one or more lines `CODE[-| ]TEXT`, every line with the
/// same 4xx or 5xx code (as libmilter's `smfi_setmlreply` builds them); printable
/// ASCII only. What is returned is rebuilt from the lines, so that it is one well-formed
/// SMTP reply whatever the filter sent: empty lines dropped, every line but the last
/// marked `CODE-`, the last `CODE ` (a filter's `554-a\r\n554-b` would otherwise leave
/// the client waiting for a last line, and a leading `\r\n` would send it an empty one).
fn reply_code(code: u8, s: String) -> Result<String, ProtocolError> {
    let lines: Vec<&str> = s.split("\r\n").filter(|l| !l.is_empty()).collect();
    let first = lines.first().ok_or(malformed(code, "empty reply"))?;
    let basic = first.get(..3).ok_or(ProtocolError::BadReplyCode)?;
    if !matches!(basic.as_bytes()[0], b'4' | b'5') || !basic.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProtocolError::BadReplyCode);
    }
    for l in &lines {
        if !l.starts_with(basic)
            || !matches!(l.as_bytes().get(3), None | Some(b' ' | b'-'))
            || l.bytes().any(|b| !(0x20..=0x7e).contains(&b))
        {
            return Err(ProtocolError::BadReplyCode);
        }
    }
    let mut out = String::with_capacity(s.len() + 2 * lines.len());
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        out.push_str(basic);
        out.push(if i + 1 < lines.len() { '-' } else { ' ' });
        out.push_str(l.get(4..).unwrap_or(""));
    }
    Ok(out)
}

/// Reads one reply packet's command byte and data.
pub fn parse_reply(code: u8, data: &[u8]) -> Result<Reply, ProtocolError> {
    let empty = |r: Reply| {
        if data.is_empty() {
            Ok(r)
        } else {
            Err(malformed(code, "unexpected data"))
        }
    };
    match code {
        b'O' => {
            let (Some(version), Some(actions), Some(steps)) =
                (u32_at(data, 0), u32_at(data, 4), u32_at(data, 8))
            else {
                return Err(malformed(code, "shorter than 12 bytes"));
            };
            let mut macros = Vec::new();
            let mut rest = &data[12..];
            while !rest.is_empty() {
                let which = u32_at(rest, 0).ok_or(malformed(code, "truncated macro list"))?;
                let stage = MacroStage::ALL
                    .get(which as usize)
                    .copied()
                    .ok_or(malformed(code, "unknown macro stage"))?;
                let end = rest[4..]
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or(malformed(code, "macro list without its NUL"))?;
                let list = String::from_utf8_lossy(&rest[4..4 + end]);
                let names: Vec<String> = list
                    .split([' ', ','])
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned)
                    .collect();
                if names
                    .iter()
                    .any(|n| n.len() > 64 || n.bytes().any(|b| !(0x21..=0x7e).contains(&b)))
                    || names.len() > 64
                {
                    return Err(malformed(code, "bad macro name"));
                }
                macros.push((stage, names));
                rest = &rest[4 + end + 1..];
            }
            Ok(Reply::Negotiate(Negotiated {
                version,
                actions,
                steps,
                macros,
            }))
        }
        b'a' => empty(Reply::Accept),
        b'c' => empty(Reply::Continue),
        b'd' => empty(Reply::Discard),
        b'r' => empty(Reply::Reject),
        b't' => empty(Reply::Tempfail),
        b's' => empty(Reply::Skip),
        b'p' => empty(Reply::Progress),
        b'4' => empty(Reply::Shutdown),
        b'f' => empty(Reply::ConnFail),
        b'y' => {
            let mut s = strings(code, data, 1, 1)?;
            Ok(Reply::ReplyCode(reply_code(code, s.remove(0))?))
        }
        b'h' => {
            let mut s = strings(code, data, 2, 2)?;
            let value = header_value(code, s.remove(1))?;
            Ok(Reply::AddHeader {
                name: header_name(code, s.remove(0))?,
                value,
            })
        }
        b'i' | b'm' => {
            let index = u32_at(data, 0).ok_or(malformed(code, "no index"))?;
            let mut s = strings(code, &data[4..], 2, 2)?;
            let value = header_value(code, s.remove(1))?;
            let name = header_name(code, s.remove(0))?;
            Ok(if code == b'i' {
                Reply::InsertHeader { index, name, value }
            } else {
                Reply::ChangeHeader { index, name, value }
            })
        }
        b'b' => Ok(Reply::ReplaceBody(data.to_vec())),
        b'+' => {
            let mut s = strings(code, data, 1, 1)?;
            Ok(Reply::AddRcpt {
                rcpt: address(code, s.remove(0))?,
                args: None,
            })
        }
        b'2' => {
            let mut s = strings(code, data, 1, 2)?;
            let args = if s.len() == 2 {
                Some(address(code, s.remove(1))?)
            } else {
                None
            };
            Ok(Reply::AddRcpt {
                rcpt: address(code, s.remove(0))?,
                args: args.or_else(|| Some(String::new())),
            })
        }
        b'-' => {
            let mut s = strings(code, data, 1, 1)?;
            Ok(Reply::DelRcpt(address(code, s.remove(0))?))
        }
        b'e' => {
            let mut s = strings(code, data, 1, 2)?;
            let args = if s.len() == 2 {
                Some(address(code, s.remove(1))?)
            } else {
                None
            };
            Ok(Reply::ChangeFrom {
                sender: address(code, s.remove(0))?,
                args,
            })
        }
        b'q' => {
            let mut s = strings(code, data, 1, 1)?;
            Ok(Reply::Quarantine(
                crate::logsafe::esc(&s.remove(0)).to_string(),
            ))
        }
        other => Err(ProtocolError::UnknownCode(other)),
    }
}

impl fmt::Display for MacroStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_framed() {
        assert_eq!(Command::abort(), b"\0\0\0\x01A");
        assert_eq!(Command::helo("mx.test"), b"\0\0\0\x09Hmx.test\0");
        assert_eq!(
            Command::optneg(action::ALL, step::ALL),
            b"\0\0\0\x0dO\0\0\0\x06\0\0\x01\xff\0\x1f\xff\xff"
        );
        let c = Command::connect("host", Some("192.0.2.1:2525".parse().unwrap()));
        assert_eq!(&c[4..], b"Chost\x004\x09\xdd192.0.2.1\0");
        assert_eq!(&Command::connect("localhost", None)[4..], b"Clocalhost\0U");
        assert_eq!(
            &Command::macros(b'M', &[("i", "ABC"), ("{auth_authen}", "u")])[4..],
            b"DMi\0ABC\0{auth_authen}\0u\0"
        );
        // a NUL in a value cannot end a string early
        assert_eq!(&Command::header(b"X-A", b"a\0b")[4..], b"LX-A\0ab\0");
    }

    #[test]
    fn replies_are_read() {
        assert_eq!(parse_reply(b'c', b""), Ok(Reply::Continue));
        assert!(parse_reply(b'c', b"x").is_err());
        assert_eq!(
            parse_reply(b'h', b"X-Spam\0 yes\0"),
            Ok(Reply::AddHeader {
                name: "X-Spam".into(),
                value: " yes".into()
            })
        );
        assert_eq!(
            parse_reply(b'm', b"\0\0\0\x02Subject\0\0"),
            Ok(Reply::ChangeHeader {
                index: 2,
                name: "Subject".into(),
                value: String::new()
            })
        );
        assert_eq!(
            parse_reply(b'y', b"554 5.7.1 Gtube pattern\0"),
            Ok(Reply::ReplyCode("554 5.7.1 Gtube pattern".into()))
        );
        assert_eq!(
            parse_reply(b'y', b"451-4.7.1 a\r\n451 4.7.1 b\0"),
            Ok(Reply::ReplyCode("451-4.7.1 a\r\n451 4.7.1 b".into()))
        );
        assert_eq!(
            parse_reply(b'e', b"<new@x.test>\0SIZE=1\0"),
            Ok(Reply::ChangeFrom {
                sender: "<new@x.test>".into(),
                args: Some("SIZE=1".into())
            })
        );
        let mut optneg = Vec::new();
        for n in [6u32, 0x11, 0x42] {
            optneg.extend_from_slice(&n.to_be_bytes());
        }
        optneg.extend_from_slice(&2u32.to_be_bytes());
        optneg.extend_from_slice(b"{mail_addr} i\0");
        assert_eq!(
            parse_reply(b'O', &optneg),
            Ok(Reply::Negotiate(Negotiated {
                version: 6,
                actions: 0x11,
                steps: 0x42,
                macros: vec![(MacroStage::Mail, vec!["{mail_addr}".into(), "i".into()])]
            }))
        );
    }

    #[test]
    fn hostile_replies_are_refused() {
        // a reply code that is not a refusal: never an accept by accident
        assert_eq!(
            parse_reply(b'y', b"250 ok\0"),
            Err(ProtocolError::BadReplyCode)
        );
        assert_eq!(
            parse_reply(b'y', b"554 a\r\n250 b\0"),
            Err(ProtocolError::BadReplyCode)
        );
        assert_eq!(
            parse_reply(b'y', b"554 a\nb\0"),
            Err(ProtocolError::BadReplyCode)
        );
        // found by the fuzzer: what reaches the client is one well-formed reply, never an
        // empty line first nor a last line marked as continued
        assert_eq!(
            parse_reply(b'y', b"\r\n554 5.7.1 a\r\n\r\n\0"),
            Ok(Reply::ReplyCode("554 5.7.1 a".into()))
        );
        assert_eq!(
            parse_reply(b'y', b"451-a\r\n451-b\0"),
            Ok(Reply::ReplyCode("451-a\r\n451 b".into()))
        );
        assert_eq!(
            parse_reply(b'y', b"550 a\r\n550\r\n550 c\0"),
            Ok(Reply::ReplyCode("550-a\r\n550-\r\n550 c".into()))
        );
        // header injection
        assert!(parse_reply(b'h', b"X-A\0a\r\nBcc: x\0").is_err());
        assert!(parse_reply(b'h', b"X-A\0a\nBcc: x\0").is_err());
        assert!(parse_reply(b'h', b"X-A\0a\n b\0").is_ok());
        assert!(parse_reply(b'h', b"X A\0a\0").is_err());
        assert!(parse_reply(b'h', b"X-A\0a").is_err());
        assert!(parse_reply(b'h', b"X-A\0a\0b\0").is_err());
        assert!(parse_reply(b'+', b"<a@b>\r\n\0").is_err());
        assert!(parse_reply(b'O', b"\0\0\0\x06").is_err());
        assert!(parse_reply(b'i', b"\0\0").is_err());
        assert_eq!(
            parse_reply(b'Z', b""),
            Err(ProtocolError::UnknownCode(b'Z'))
        );
        assert!(check_length(0).is_err());
        assert!(check_length(MAX_PACKET as u32 + 1).is_err());
        assert_eq!(check_length(MAX_PACKET as u32), Ok(MAX_PACKET));
    }
}
