//! The SMTP command parser and the DATA/BDAT receivers, fed as a session feeds them
//! (`Session::ingest` in src/smtp/session.rs): command lines through mtad's
//! [`LineReader`], each line through smtp-proto's `Request::parse` as the session
//! parses it, DATA content through mtad's [`DotReceiver`] until its end, BDAT chunks by
//! their announced size, AUTH responses through mtad's SASL decoders.
//!
//! Input: one byte for the line-length limit, one for how the stream is cut into
//! reads (its high bit: the session normalizes bare LF, as for a client of a
//! `bare-newline="normalize"` listener), then the bytes a client sends. The stream is fed twice: cut into reads, and
//! in one piece. Besides "no panic", two properties are checked:
//! - framing does not depend on how TCP cuts the stream (the same lines, the same
//!   message bodies, the same verdicts on bare CR/LF either way);
//! - a DATA body that the receiver did not flag for bare CR/LF holds none (what it
//!   lets through unflagged must be clean CRLF text: the smuggling rule of
//!   DESIGN.md §5.4), and lines are never longer than the limit.

use mtad::auth::sasl;
use mtad::smtp::dot::{DotReceiver, has_bare_eol};
use mtad::smtp::line::{LineEvent, LineReader};
use smtp_proto::Request;

/// Stop storing a message body past this (the session's `message-size` does the
/// same: the rest is read to its end and dropped).
const BODY_CAP: usize = 1 << 20;

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Line(Vec<u8>),
    TooLong,
    BareEol,
    /// A parsed command, as its Debug text (smtp-proto's types are not comparable).
    Command(String),
    SyntaxError(String),
    Sasl(bool),
    DataEnd {
        body: Vec<u8>,
        bare_eol: bool,
    },
    Chunk {
        len: usize,
        last: bool,
    },
}

enum State {
    Command,
    Data(DotReceiver, Vec<u8>),
    Bdat { left: usize, last: bool, got: usize },
}

struct Session {
    lines: LineReader,
    max: usize,
    /// Bare LFs are read as CRLF, in commands and in DATA.
    normalize_lf: bool,
    state: State,
    /// An AUTH exchange waits for the next line: PLAIN or LOGIN's user / password.
    sasl: Option<u8>,
    events: Vec<Event>,
}

impl Session {
    fn new(max: usize, normalize_lf: bool) -> Self {
        Session {
            lines: LineReader::new(max).normalize_bare_lf(normalize_lf),
            max: max.max(8),
            normalize_lf,
            state: State::Command,
            sasl: None,
            events: Vec::new(),
        }
    }

    fn ingest(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            match &mut self.state {
                State::Command => {
                    let Some(event) = self.lines.next(&mut input) else {
                        break;
                    };
                    match event {
                        LineEvent::Line => {
                            let line = self.lines.take();
                            assert!(line.len() <= self.max, "line longer than the limit");
                            assert!(line.ends_with(b"\r\n"), "a line ends with CRLF");
                            let inner = &line[..line.len() - 2];
                            assert!(
                                !inner.contains(&b'\r') && !inner.contains(&b'\n'),
                                "a line holds no other CR or LF"
                            );
                            self.events.push(Event::Line(line.clone()));
                            if let Some(step) = self.sasl.take() {
                                self.sasl_response(step, inner);
                            } else {
                                self.command(&line);
                            }
                            self.lines.restore(line);
                        }
                        LineEvent::TooLong => {
                            let _ = self.lines.long_line_starts(b"AUTH ");
                            self.sasl = None;
                            self.events.push(Event::TooLong);
                        }
                        LineEvent::BareEol => self.events.push(Event::BareEol),
                    }
                }
                State::Data(rx, body) => {
                    let sink = if body.len() > BODY_CAP {
                        None
                    } else {
                        Some(&mut *body)
                    };
                    let before = input.len();
                    let done = rx.ingest(&mut input, sink);
                    assert!(input.len() <= before);
                    if done {
                        let bare_eol = rx.bare_eol();
                        let body = std::mem::take(body);
                        assert!(
                            body.is_empty() || body.ends_with(b"\r\n") || body.len() > BODY_CAP,
                            "a message ends with a line end"
                        );
                        if !bare_eol && body.len() <= BODY_CAP {
                            assert!(
                                !has_bare_eol(&body),
                                "a body with a bare CR or LF was not flagged: {:?}",
                                String::from_utf8_lossy(&body)
                            );
                        }
                        self.events.push(Event::DataEnd { body, bare_eol });
                        self.state = State::Command;
                    }
                }
                State::Bdat { left, last, got } => {
                    let take = (*left).min(input.len());
                    *left -= take;
                    *got += take;
                    let chunk = &input[..take];
                    let _ = has_bare_eol(chunk);
                    input = &input[take..];
                    if *left == 0 {
                        self.events.push(Event::Chunk {
                            len: *got,
                            last: *last,
                        });
                        self.state = State::Command;
                    }
                }
            }
        }
    }

    fn command(&mut self, line: &[u8]) {
        match Request::parse(&mut line.iter()) {
            Ok(request) => {
                self.events.push(Event::Command(format!("{request:?}")));
                match request {
                    Request::Data => {
                        self.state =
                            State::Data(DotReceiver::normalizing(self.normalize_lf), Vec::new())
                    }
                    Request::Bdat {
                        chunk_size,
                        is_last,
                    } => {
                        if chunk_size == 0 {
                            self.events.push(Event::Chunk {
                                len: 0,
                                last: is_last,
                            });
                        } else {
                            self.state = State::Bdat {
                                left: chunk_size,
                                last: is_last,
                                got: 0,
                            };
                        }
                    }
                    Request::Auth {
                        mechanism,
                        initial_response,
                    } => match mechanism {
                        smtp_proto::AUTH_PLAIN if initial_response.is_empty() => {
                            self.sasl = Some(0)
                        }
                        smtp_proto::AUTH_PLAIN => {
                            let ok = sasl::decode_plain(&initial_response).is_ok();
                            self.events.push(Event::Sasl(ok));
                        }
                        smtp_proto::AUTH_LOGIN if initial_response.is_empty() => {
                            self.sasl = Some(1)
                        }
                        smtp_proto::AUTH_LOGIN => {
                            let ok = sasl::decode_login_username(&initial_response).is_ok();
                            self.events.push(Event::Sasl(ok));
                            self.sasl = Some(2);
                        }
                        _ => {}
                    },
                    _ => {}
                }
            }
            Err(err) => self.events.push(Event::SyntaxError(format!("{err:?}"))),
        }
    }

    fn sasl_response(&mut self, step: u8, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let ok = match step {
            0 => sasl::decode_plain(&text).is_ok(),
            1 => {
                let ok = sasl::decode_login_username(&text).is_ok();
                if ok {
                    self.sasl = Some(2);
                }
                ok
            }
            _ => sasl::decode_login_password(&text).is_ok(),
        };
        self.events.push(Event::Sasl(ok));
    }
}

/// The fuzz target.
pub fn run(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    // 8..=1028 bytes: mtad's minimum and around the default of 1000
    let max = 8 + usize::from(data[0]) * 4;
    let mut cut = u32::from(data[1]) | 1;
    let normalize_lf = data[1] & 0x80 != 0;
    let stream = &data[2..];

    let mut whole = Session::new(max, normalize_lf);
    whole.ingest(stream);

    let mut pieces = Session::new(max, normalize_lf);
    let mut rest = stream;
    while !rest.is_empty() {
        // a small pseudo-random read size, 1..=64, from the second byte
        cut = cut.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = (((cut >> 16) % 64) as usize + 1).min(rest.len());
        let (read, after) = rest.split_at(n);
        pieces.ingest(read);
        rest = after;
    }
    assert_eq!(
        whole.events, pieces.events,
        "framing depends on how the stream is cut into reads"
    );
}
