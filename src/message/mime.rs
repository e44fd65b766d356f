//! The MIME structure of a message, as content checks and data hooks see it, read
//! with the `mail-parser` crate.
//!
//! [`Mime::parse`] flattens the message into a bounded list of [`Part`]s in message
//! order: part 0 is the message itself (its headers are the top-level ones, which
//! content checks read from `Context::headers`), then every MIME part, the parts of
//! attached messages (`message/rfc822`) included. At most [`MAX_PARTS`] parts and
//! [`MAX_DEPTH`] levels of nesting are kept; what lies beyond is not inspected
//! (`truncated` says so). The parser never panics on its own account (a panic
//! inside it would be caught and the message treated as one text part).
//!
//! Offsets: a part's header and body ranges are byte ranges of the message as
//! received when `addressable` is true. A message attached with a transfer encoding
//! (a base64 `message/rfc822`, rare) is parsed from its decoded bytes: its parts are
//! not addressable, so nothing in them can be edited.

use std::ops::Range;

use mail_parser::{Encoding, Message, MessageParser, MimeHeaders, PartType};

use super::headers::{Headers, parse_headers};

/// Most parts inspected in one message (the message itself counts as one).
pub const MAX_PARTS: usize = 100;
/// Deepest nesting inspected (multipart in multipart, or an attached message).
pub const MAX_DEPTH: usize = 20;

/// Which header_checks class a header belongs to (Postfix's header classes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderClass {
    /// A top-level header that is not a MIME header: `header_checks`.
    Primary,
    /// A MIME header: `Content-*` or `MIME-Version` at the top level, or any header
    /// of a MIME part: `mime_header_checks`.
    Mime,
    /// A header of an attached message (a `message/rfc822` part's body):
    /// `nested_header_checks`.
    Nested,
}

impl HeaderClass {
    /// The class of a top-level header, by name.
    pub fn of_top_level(name: &str) -> HeaderClass {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("content-") || lower == "mime-version" {
            HeaderClass::Mime
        } else {
            HeaderClass::Primary
        }
    }
}

/// A part's content transfer encoding, as far as decoding goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferEncoding {
    /// 7bit, 8bit, binary or none: the decoded lines are the raw lines.
    Identity,
    QuotedPrintable,
    Base64,
}

impl TransferEncoding {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferEncoding::Identity => "identity",
            TransferEncoding::QuotedPrintable => "quoted-printable",
            TransferEncoding::Base64 => "base64",
        }
    }
}

/// One MIME part (or the message itself, or an attached message).
#[derive(Clone, Debug)]
pub struct Part {
    /// Its place in [`Mime::parts`]: 0 is the message.
    pub index: usize,
    pub depth: usize,
    /// `type/subtype`, lower case (`text/plain` when none is given).
    pub content_type: String,
    /// The attachment's file name (Content-Disposition `filename` or Content-Type
    /// `name`), if any.
    pub filename: Option<String>,
    /// Content-Disposition: attachment, or a named non-text part.
    pub is_attachment: bool,
    /// Whether the part is text (`text/*`, not multipart, not a message).
    pub is_text: bool,
    /// The class of this part's own headers; part 0's are read from the context
    /// instead and left empty here.
    pub class: HeaderClass,
    /// The part's headers, as header checks see them; raw ranges are in the message
    /// as received when `addressable`.
    pub headers: Headers,
    /// The body's raw range (meaningful when `addressable`).
    pub body: Range<usize>,
    pub encoding: TransferEncoding,
    /// The declared charset of a text part.
    pub charset: Option<String>,
    /// Decoded body size in bytes.
    pub size: usize,
    /// The decoded text of a text part whose lines cannot be read raw (encoded, or
    /// not addressable); `None` otherwise.
    pub text: Option<String>,
    /// Ranges refer to the message as received.
    pub addressable: bool,
}

impl Part {
    /// The body's decoded lines: `(text, raw range)`, the range `None` when the line
    /// cannot be edited in place (an encoded part). At most `limit` bytes per part
    /// (Postfix's `body_checks_size_limit`); empty for non-text parts.
    pub fn lines<'a>(
        &'a self,
        message: &'a [u8],
        limit: usize,
    ) -> Box<dyn Iterator<Item = (String, Option<Range<usize>>)> + 'a> {
        if !self.is_text {
            return Box::new(std::iter::empty());
        }
        if let Some(text) = &self.text {
            let mut inspected = 0usize;
            return Box::new(
                text.split_inclusive('\n')
                    .take_while(move |l| {
                        let go = inspected < limit;
                        inspected += l.len();
                        go
                    })
                    .map(|l| {
                        let l = l.strip_suffix('\n').unwrap_or(l);
                        (l.strip_suffix('\r').unwrap_or(l).to_owned(), None)
                    }),
            );
        }
        let decoder = self
            .charset
            .as_deref()
            .filter(|c| !is_utf8(c))
            .and_then(|c| mail_parser::decoders::charsets::map::charset_decoder(c.as_bytes()));
        let end = self.body.end.min(message.len());
        let mut pos = self.body.start.min(end);
        let start = pos;
        Box::new(std::iter::from_fn(move || {
            if pos >= end || pos - start >= limit {
                return None;
            }
            let stop = memchr::memchr(b'\n', &message[pos..end]).map_or(end, |i| pos + i + 1);
            let raw = &message[pos..stop];
            let line = raw.strip_suffix(b"\n").unwrap_or(raw);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let text = match decoder {
                Some(d) => d(line),
                None => String::from_utf8_lossy(line).into_owned(),
            };
            // the part's last line: its line break belongs to the boundary
            // delimiter that follows, but an edit takes it along (a replacement
            // line ends with its own), so that the delimiter stays at a line start
            let mut range = pos..stop;
            if !raw.ends_with(b"\n") {
                let after = &message[stop..];
                range.end += if after.starts_with(b"\r\n") {
                    2
                } else {
                    usize::from(after.starts_with(b"\n"))
                };
            }
            pos = stop;
            Some((text, Some(range)))
        }))
    }

    /// The decoded text of a text part, at most `max` bytes (cut at a character
    /// boundary); empty for other parts.
    pub fn decoded_text(&self, message: &[u8], max: usize) -> String {
        let mut out = String::new();
        if !self.is_text {
            return out;
        }
        if let Some(text) = &self.text {
            out.push_str(cut(text, max));
            return out;
        }
        for (line, raw) in self.lines(message, max) {
            let eol = raw.map_or("\n", |r| {
                if message[..r.end.min(message.len())].ends_with(b"\r\n") {
                    "\r\n"
                } else if message[..r.end.min(message.len())].ends_with(b"\n") {
                    "\n"
                } else {
                    ""
                }
            });
            if out.len() + line.len() + eol.len() > max {
                out.push_str(cut(&line, max.saturating_sub(out.len())));
                break;
            }
            out.push_str(&line);
            out.push_str(eol);
        }
        out
    }
}

fn is_utf8(charset: &str) -> bool {
    matches!(
        charset.to_ascii_lowercase().as_str(),
        "utf-8" | "utf8" | "us-ascii" | "ascii"
    )
}

/// `text` cut at most `max` bytes, at a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A message's parts (see the module documentation).
#[derive(Clone, Debug, Default)]
pub struct Mime {
    pub parts: Vec<Part>,
    /// Some parts were left out ([`MAX_PARTS`], [`MAX_DEPTH`]).
    pub truncated: bool,
}

impl Mime {
    /// Reads `message` (headers and body, as received). Never panics.
    pub fn parse(message: &[u8]) -> Mime {
        Self::simple(message).unwrap_or_else(|| Self::parse_full(message))
    }

    /// [`Mime::parse`] with the parser, whatever the message.
    fn parse_full(message: &[u8]) -> Mime {
        let mut mime = Mime::default();
        // the parser's output nests as deep as the message does, and dropping it
        // recurses: only as many containers as can matter reach it
        let seen = parser_end(message, MAX_CONTAINERS, MAX_DELIMITERS);
        if seen < message.len() {
            mime.truncated = true;
        }
        let seen = &message[..seen];
        let parsed = std::panic::catch_unwind(|| MessageParser::default().parse(seen));
        match parsed {
            Ok(Some(msg)) => walk(&msg, seen, 0, false, &mut mime),
            Ok(None) => {}
            Err(_) => tracing::error!("MIME parser panicked; message read as one text part"),
        }
        // the parser reads past a line that ends the header block for Postfix (a
        // line without a colon, say) and may find a multipart Content-Type there:
        // for Postfix that is body text, and so it is here
        let (headers, _) = parse_headers(message);
        let declared = headers.iter().any(|h| {
            h.name().eq_ignore_ascii_case("content-type") && {
                let v = h.value().trim_start().to_ascii_lowercase();
                v.starts_with("multipart/") || v.starts_with("message/")
            }
        });
        if !declared && mime.parts.len() > 1 {
            mime.parts.clear();
            mime.truncated = false;
        }
        if mime.parts.is_empty() {
            // not even a header block, or none that declares parts: the whole body
            // is one text part
            let body = parse_headers(message).1;
            mime.parts.push(Part {
                index: 0,
                depth: 0,
                content_type: "text/plain".to_owned(),
                filename: None,
                is_attachment: false,
                is_text: true,
                class: HeaderClass::Primary,
                headers: Headers::default(),
                body: body..message.len(),
                encoding: TransferEncoding::Identity,
                charset: None,
                size: message.len() - body,
                text: None,
                addressable: true,
            });
        }
        mime
    }
}

impl Mime {
    /// The common case without the parser: one text part, no transfer encoding, in
    /// US-ASCII or UTF-8, not an attachment. Its lines are the raw lines. `None` for
    /// anything else (the parser then reads it).
    fn simple(message: &[u8]) -> Option<Mime> {
        let (headers, body_start) = parse_headers(message);
        let mut content_type = "text/plain".to_owned();
        let mut charset = None;
        for h in &headers {
            let name = h.name();
            if name.eq_ignore_ascii_case("content-type") {
                let value = h.value().to_ascii_lowercase();
                let mut params = value.split(';');
                let ty = params.next().unwrap_or_default().trim();
                if !ty.starts_with("text/") {
                    return None;
                }
                content_type = ty.to_owned();
                for p in params {
                    let (key, val) = p.split_once('=').unwrap_or((p, ""));
                    match key.trim() {
                        "charset" => {
                            let cs = val.trim().trim_matches('"');
                            if !matches!(cs, "us-ascii" | "utf-8" | "utf8") {
                                return None;
                            }
                            charset = Some(cs.to_owned());
                        }
                        "name" => return None,
                        _ => {}
                    }
                }
            } else if name.eq_ignore_ascii_case("content-transfer-encoding") {
                if !matches!(
                    h.value().trim().to_ascii_lowercase().as_str(),
                    "7bit" | "8bit" | "binary"
                ) {
                    return None;
                }
            } else if name.eq_ignore_ascii_case("content-disposition") {
                return None;
            }
        }
        let body = body_start.min(message.len())..message.len();
        Some(Mime {
            parts: vec![Part {
                index: 0,
                depth: 0,
                content_type,
                filename: None,
                is_attachment: false,
                is_text: true,
                class: HeaderClass::Primary,
                headers: Headers::default(),
                size: body.len(),
                body,
                encoding: TransferEncoding::Identity,
                charset,
                text: None,
                addressable: true,
            }],
            truncated: false,
        })
    }
}

/// Most container headers (`Content-Type: multipart/*` or `message/*`) handed to
/// the parser: every level of nesting needs one.
const MAX_CONTAINERS: usize = 2 * MAX_PARTS;

/// Most boundary delimiters handed to the parser: each part needs one, each
/// multipart a closing one.
const MAX_DELIMITERS: usize = 2 * MAX_PARTS + MAX_CONTAINERS;
/// Most distinct boundaries looked for (each one is a pass over the message).
const MAX_BOUNDARIES: usize = 32;

/// How much of `message` the parser is given (see the module documentation): up to
/// the line that declares the `max + 1`-th container type (`Content-Type:
/// multipart/*` or `message/*`) or the `MAX_BOUNDARIES + 1`-th distinct boundary, or
/// where the `max_delimiters + 1`-th boundary delimiter is. `mail-parser` takes `--`
/// and a boundary anywhere, even inside a line, as a delimiter, and cannot be
/// stopped midway: so every occurrence of a declared boundary counts, and the parser
/// never builds more parts than this allows. Linear: one pass for the declarations,
/// one `memmem` pass per distinct boundary.
fn parser_end(message: &[u8], max: usize, max_delimiters: usize) -> usize {
    const NAME: &[u8] = b"content-type:";
    let mut count = 0;
    let mut boundaries: Vec<&[u8]> = Vec::new();
    let mut end_of_scan = message.len();
    let mut pos = 0;
    while pos < message.len() {
        let end = memchr::memchr(b'\n', &message[pos..]).map_or(message.len(), |i| pos + i + 1);
        let line = &message[pos..end];
        if line.len() > NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME) {
            // the type may start on a continuation line
            let mut rest = message[pos + NAME.len()..]
                .iter()
                .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                .map_or(&b""[..], |i| &message[pos + NAME.len() + i..]);
            rest = &rest[..rest.len().min(10)];
            let container = rest.len() >= 8
                && (rest[..8].eq_ignore_ascii_case(b"message/")
                    || rest.len() >= 10 && rest[..10].eq_ignore_ascii_case(b"multipart/"));
            if container {
                count += 1;
                if count > max {
                    end_of_scan = pos;
                    break;
                }
                if let Some(b) = boundary_param(&message[pos..])
                    && !boundaries.contains(&b)
                {
                    if boundaries.len() == MAX_BOUNDARIES {
                        end_of_scan = pos;
                        break;
                    }
                    boundaries.push(b);
                }
            }
        }
        pos = end;
    }
    let scanned = &message[..end_of_scan];
    // where each boundary occurs (at most max_delimiters + 1 of each): the
    // max_delimiters + 1-th of all of them ends what the parser gets
    let mut at: Vec<usize> = Vec::new();
    for b in &boundaries {
        let mut needle = Vec::with_capacity(b.len() + 2);
        needle.extend_from_slice(b"--");
        needle.extend_from_slice(b);
        at.extend(memchr::memmem::find_iter(scanned, &needle).take(max_delimiters + 1));
    }
    if at.len() <= max_delimiters {
        return end_of_scan;
    }
    at.sort_unstable();
    let cut = at[max_delimiters];
    // at the start of its line
    memchr::memrchr(b'\n', &message[..cut]).map_or(0, |i| i + 1)
}

/// The `boundary=` parameter of the `Content-Type` header at the start of `header`
/// (continuation lines included; the first 4 KiB looked at), quoted or not.
fn boundary_param(header: &[u8]) -> Option<&[u8]> {
    // the header's logical extent: up to a line that does not continue it
    let mut end = 0;
    while end < header.len() && end < 4096 {
        let stop = memchr::memchr(b'\n', &header[end..]).map_or(header.len(), |i| end + i + 1);
        end = stop;
        if !matches!(header.get(end), Some(b' ' | b'\t')) {
            break;
        }
    }
    let text = &header[..end.min(header.len())];
    const KEY: &[u8] = b"boundary=";
    let at = text
        .windows(KEY.len())
        .position(|w| w.eq_ignore_ascii_case(KEY))?;
    let value = &text[at + KEY.len()..];
    let value = match value.strip_prefix(b"\"") {
        Some(quoted) => &quoted[..memchr::memchr(b'"', quoted)?],
        None => {
            let n = value
                .iter()
                .position(|b| matches!(b, b';' | b' ' | b'\t' | b'\r' | b'\n'))
                .unwrap_or(value.len());
            &value[..n]
        }
    };
    (!value.is_empty()).then_some(value)
}

/// Adds the parts of `msg` (the message, or one attached at `depth`) to `out`.
fn walk(msg: &Message<'_>, top: &[u8], depth: usize, nested: bool, out: &mut Mime) {
    let raw: &[u8] = msg.raw_message.as_ref();
    let addressable = std::ptr::eq(raw.as_ptr(), top.as_ptr()) && raw.len() == top.len();
    let mut depths = vec![depth; msg.parts.len()];
    for (i, part) in msg.parts.iter().enumerate() {
        if let PartType::Multipart(children) = &part.body {
            let child_depth = depths[i] + 1;
            for &c in children {
                if let Some(d) = depths.get_mut(c as usize)
                    && (c as usize) > i
                {
                    *d = child_depth;
                }
            }
        }
    }
    for (i, part) in msg.parts.iter().enumerate() {
        let d = depths[i];
        if d > MAX_DEPTH {
            out.truncated = true;
            continue;
        }
        if out.parts.len() >= MAX_PARTS {
            out.truncated = true;
            return;
        }
        let index = out.parts.len();
        let class = match (i, nested) {
            (0, false) => HeaderClass::Primary,
            (0, true) => HeaderClass::Nested,
            _ => HeaderClass::Mime,
        };
        let header_range = (part.offset_header as usize).min(raw.len())
            ..(part.offset_body as usize).min(raw.len());
        let headers = if index == 0 {
            Headers::default()
        } else {
            // raw ranges only mean something when addressable (checks look first)
            let block = &raw[header_range.clone()];
            parse_headers(block).0.shifted(header_range.start)
        };
        let ct = part.content_type();
        let content_type = ct.map_or_else(
            || "text/plain".to_owned(),
            |c| match c.subtype() {
                Some(s) => format!("{}/{}", c.ctype(), s).to_ascii_lowercase(),
                None => c.ctype().to_ascii_lowercase(),
            },
        );
        let is_text = matches!(part.body, PartType::Text(_) | PartType::Html(_));
        let encoding = match part.encoding {
            Encoding::None => TransferEncoding::Identity,
            Encoding::QuotedPrintable => TransferEncoding::QuotedPrintable,
            Encoding::Base64 => TransferEncoding::Base64,
        };
        let filename = part.attachment_name().map(str::to_owned);
        let disposition_attachment = part
            .content_disposition()
            .is_some_and(|c| c.is_attachment());
        let is_attachment = disposition_attachment
            || (filename.is_some() && !is_text)
            || matches!(part.body, PartType::Message(_) | PartType::Binary(_));
        let body = (part.offset_body as usize).min(raw.len())
            ..(part.offset_end as usize).clamp(part.offset_body as usize, raw.len().max(1));
        let body = body.start..body.end.min(raw.len());
        let text = match &part.body {
            PartType::Text(t) | PartType::Html(t)
                if encoding != TransferEncoding::Identity || !addressable =>
            {
                Some(t.to_string())
            }
            _ => None,
        };
        out.parts.push(Part {
            index,
            depth: d,
            content_type,
            filename,
            is_attachment: is_attachment && index != 0,
            is_text,
            class,
            headers,
            body,
            encoding,
            charset: ct.and_then(|c| c.attribute("charset")).map(str::to_owned),
            size: part.len(),
            text,
            addressable,
        });
        if let PartType::Message(inner) = &part.body {
            if d + 1 > MAX_DEPTH {
                out.truncated = true;
            } else {
                walk(inner, top, d + 1, true, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The shortcut for plain messages reads them as the parser does.
    #[test]
    fn the_plain_message_shortcut_agrees_with_the_parser() {
        for msg in [
            &b"Subject: hi\r\n\r\nline one\r\nline two\r\n"[..],
            b"Content-Type: text/plain; charset=\"UTF-8\"\r\nContent-Transfer-Encoding: 8bit\r\nSubject: x\r\n\r\nh\xc3\xa9llo\r\n",
            b"Content-Type: text/html; charset=us-ascii\r\n\r\n<p>hi</p>\r\n",
            b"Subject: no body\r\n",
        ] {
            let fast = super::Mime::simple(msg).expect("a plain message");
            let full = super::Mime::parse_full(msg);
            assert_eq!(fast.parts.len(), 1);
            let (f, p) = (&fast.parts[0], &full.parts[0]);
            assert_eq!(
                (&f.content_type, f.is_text, f.is_attachment, f.encoding, f.body.clone()),
                (&p.content_type, p.is_text, p.is_attachment, p.encoding, p.body.clone()),
                "{}",
                String::from_utf8_lossy(msg)
            );
            assert_eq!(
                f.lines(msg, 1 << 20).collect::<Vec<_>>(),
                p.lines(msg, 1 << 20).collect::<Vec<_>>()
            );
        }
        for msg in [
            &b"Content-Type: text/plain; charset=iso-2022-jp\r\n\r\nx\r\n"[..],
            b"Content-Transfer-Encoding: base64\r\n\r\naGk=\r\n",
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
            b"Content-Disposition: attachment; filename=a.txt\r\n\r\nx\r\n",
        ] {
            assert!(super::Mime::simple(msg).is_none());
        }
    }

    use super::*;

    pub(crate) const MULTI: &str = "Received: from x\r\nFrom: a@example.test\r\nSubject: hi\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"BB\"\r\n\r\npreamble\r\n--BB\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nhello caf=C3=A9\r\nsecond line\r\n--BB\r\nContent-Type: application/octet-stream; name=\"evil.exe\"\r\nContent-Disposition: attachment;\r\n filename=\"evil.exe\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--BB\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nFrom: b@example.test\r\n\r\ninner body\r\n--BB--\r\n";

    #[test]
    fn parts_in_order_with_classes_and_offsets() {
        let m = Mime::parse(MULTI.as_bytes());
        let types: Vec<&str> = m.parts.iter().map(|p| p.content_type.as_str()).collect();
        assert_eq!(
            types,
            [
                "multipart/mixed",
                "text/plain",
                "application/octet-stream",
                "message/rfc822",
                "text/plain"
            ]
        );
        let exe = &m.parts[2];
        assert_eq!(exe.filename.as_deref(), Some("evil.exe"));
        assert!(exe.is_attachment && !exe.is_text);
        assert_eq!(exe.class, HeaderClass::Mime);
        assert_eq!(
            exe.headers.get(1).unwrap().line(),
            "Content-Disposition: attachment;\n filename=\"evil.exe\""
        );
        let r = exe.headers.get(1).unwrap().raw();
        assert_eq!(
            &MULTI[r],
            "Content-Disposition: attachment;\r\n filename=\"evil.exe\"\r\n"
        );
        assert_eq!(exe.size, 12);
        let inner = &m.parts[4];
        assert_eq!(inner.class, HeaderClass::Nested);
        assert_eq!(inner.headers.get(0).unwrap().line(), "Subject: inner");
        assert_eq!(
            &MULTI[inner.headers.get(0).unwrap().raw()],
            "Subject: inner\r\n"
        );
        let text = &m.parts[1];
        assert_eq!(text.encoding, TransferEncoding::QuotedPrintable);
        let lines: Vec<(String, Option<Range<usize>>)> =
            text.lines(MULTI.as_bytes(), 1000).collect();
        assert_eq!(lines[0], ("hello café".to_owned(), None));
        assert_eq!(lines[1].0, "second line");
        let body: Vec<String> = inner.lines(MULTI.as_bytes(), 1000).map(|l| l.0).collect();
        assert_eq!(body, ["inner body"]);
        assert!(!m.truncated);
    }

    #[test]
    fn classes_of_top_level_headers() {
        assert_eq!(HeaderClass::of_top_level("Subject"), HeaderClass::Primary);
        assert_eq!(HeaderClass::of_top_level("content-type"), HeaderClass::Mime);
        assert_eq!(HeaderClass::of_top_level("MIME-Version"), HeaderClass::Mime);
    }

    #[test]
    fn non_mime_and_garbage() {
        let m = Mime::parse(b"Subject: x\r\n\r\nline\r\n");
        assert_eq!(m.parts.len(), 1);
        assert!(m.parts[0].is_text);
        let lines: Vec<String> = m.parts[0]
            .lines(b"Subject: x\r\n\r\nline\r\n", 100)
            .map(|l| l.0)
            .collect();
        assert_eq!(lines, ["line"]);
        for junk in [
            &b""[..],
            b"\r\n",
            b"--\r\n--",
            b"\xff\xfe\x00",
            b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n",
        ] {
            let m = Mime::parse(junk);
            assert!(!m.parts.is_empty());
            for p in &m.parts {
                let _ = p.lines(junk, 1000).count();
                let _ = p.decoded_text(junk, 1000);
            }
        }
    }

    /// `postmap -b -q -` (Postfix 3.7) shows every line after `bogus line` as a body
    /// line: the Content-Type after it is not a header, so there are no parts.
    #[test]
    fn a_content_type_after_the_header_block_is_body_text() {
        let msg = b"Subject: x\r\nbogus line\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nviagra\r\n--b--\r\n";
        let m = Mime::parse(msg);
        assert_eq!(m.parts.len(), 1);
        // the parser's path too (a top-level type that is not simple text)
        assert_eq!(Mime::parse_full(msg).parts.len(), 1);
        let lines: Vec<String> = m.parts[0].lines(msg, 1 << 20).map(|(l, _)| l).collect();
        assert_eq!(
            lines,
            [
                "bogus line",
                "Content-Type: multipart/mixed; boundary=b",
                "",
                "--b",
                "Content-Type: text/plain",
                "",
                "viagra",
                "--b--"
            ]
        );
    }

    #[test]
    fn hostile_messages_are_bounded() {
        // thousands of parts
        let mut msg = String::from("Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n");
        for i in 0..5000 {
            msg.push_str(&format!(
                "--b\r\nContent-Type: text/plain\r\nX-N: {i}\r\n\r\npart {i}\r\n"
            ));
        }
        msg.push_str("--b--\r\n");
        let m = Mime::parse(msg.as_bytes());
        assert_eq!(m.parts.len(), MAX_PARTS);
        assert!(m.truncated);
        // the parser itself only got the first parts: the cap applies while parsing
        let given = parser_end(msg.as_bytes(), MAX_CONTAINERS, MAX_DELIMITERS);
        let delimiters = msg[..given].matches("\r\n--b").count();
        assert_eq!(delimiters, MAX_DELIMITERS, "{given}");
        // 100k tiny parts, the boundary folded onto a continuation line
        let mut msg = String::from("Content-Type: multipart/mixed;\r\n\tboundary=x\r\n\r\n");
        msg.push_str(&"--x\r\n\r\n".repeat(100_000));
        let given = parser_end(msg.as_bytes(), MAX_CONTAINERS, MAX_DELIMITERS);
        assert!(given < 50 + 7 * (MAX_DELIMITERS + 1), "{given}");
        let m = Mime::parse(msg.as_bytes());
        assert_eq!(m.parts.len(), MAX_PARTS);
        assert!(m.truncated);
        // the parser takes a boundary inside a line for a delimiter too: counted
        let mut msg = String::from("Content-Type: multipart/mixed; boundary=x\r\n\r\n");
        msg.push_str(&"a--x\r\n\r\n".repeat(100_000));
        let given = parser_end(msg.as_bytes(), MAX_CONTAINERS, MAX_DELIMITERS);
        assert!(given < 50 + 8 * (MAX_DELIMITERS + 1), "{given}");
        // lines that only look like delimiters of an undeclared boundary do not count
        assert_eq!(
            boundary_param(b"Content-Type: multipart/mixed; BOUNDARY=\"a b\"; x=y\r\n"),
            Some(&b"a b"[..])
        );
        assert_eq!(boundary_param(b"Content-Type: text/plain\r\n"), None);
        let msg = "Content-Type: multipart/mixed; boundary=q\r\n\r\n--other\r\n--other\r\n";
        assert_eq!(parser_end(msg.as_bytes(), 10, 1), msg.len());
        // deep nesting of multiparts
        let mut msg = String::new();
        for i in 0..2000 {
            msg.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
            ));
        }
        msg.push_str("Content-Type: text/plain\r\n\r\ndeep\r\n");
        let m = Mime::parse(msg.as_bytes());
        assert!(m.parts.len() <= MAX_PARTS);
        assert!(m.parts.iter().all(|p| p.depth <= MAX_DEPTH));
        assert!(m.truncated);
        // deep nesting of attached messages
        let mut msg = String::new();
        for _ in 0..2000 {
            msg.push_str("Subject: n\r\nContent-Type: message/rfc822\r\n\r\n");
        }
        msg.push_str("Subject: last\r\n\r\nbody\r\n");
        let m = Mime::parse(msg.as_bytes());
        assert!(m.parts.len() <= MAX_PARTS);
        assert!(m.parts.iter().all(|p| p.depth <= MAX_DEPTH));
        // a huge header
        let mut msg =
            String::from("Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nX-Big: ");
        for _ in 0..100_000 {
            msg.push_str("aaaaaaaaa\r\n ");
        }
        msg.push_str("\r\n\r\nbody\r\n--b--\r\n");
        let m = Mime::parse(msg.as_bytes());
        assert!(m.parts.len() <= 3);
    }
}

#[cfg(test)]
mod stack_tests {
    use super::*;

    /// Deep nesting neither overflows a small stack (parsing, walking, dropping) nor
    /// keeps more than the caps.
    #[test]
    fn deep_nesting_on_a_small_stack() {
        let mut a = String::new();
        for _ in 0..50_000 {
            a.push_str("Content-Type: message/rfc822\r\n\r\n");
        }
        a.push_str("Subject: last\r\n\r\nbody\r\n");
        let mut b = String::new();
        for i in 0..20_000 {
            b.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\nContent-Type: message/rfc822\r\n\r\n"
            ));
        }
        b.push_str("Subject: last\r\n\r\nbody\r\n");
        for msg in [a, b] {
            let handle = std::thread::Builder::new()
                .stack_size(512 * 1024)
                .spawn(move || {
                    let m = Mime::parse(msg.as_bytes());
                    assert!(m.parts.len() <= MAX_PARTS);
                })
                .unwrap();
            handle.join().unwrap();
        }
    }
}
