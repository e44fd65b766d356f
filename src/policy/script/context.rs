//! The `ctx` a hook function receives, and the address and client objects it hands
//! out.
//!
//! `ctx` is a custom Rhai type with registered getters, not a map: a call copies only
//! the fields the hook actually reads (the compile-time [`super::check`] pass records
//! them in a [`FieldSet`]), so a rcpt hook that looks at `ctx.rcpt.domain` does not pay
//! for the header block or the recipient list. The data is owned (`'static`, as Rhai
//! requires) and shared by `Arc`, so the clones Rhai makes when `ctx` is passed to a
//! helper function are cheap and see the same header changes.

use std::sync::{Arc, Mutex, PoisonError};

use rhai::{Array, Dynamic, EvalAltResult, ImmutableString, Map};

use super::engine::check_time;
use super::{HeaderChange, HookInput};
use crate::policy::RateKind;
use crate::policy::{Stage, routing_domain};

/// Longest header line (`Name: value`) a script may add, as RFC 5322 allows.
pub(crate) const MAX_HEADER_LINE: usize = 998;
/// Longest header name a script may use.
pub(crate) const MAX_HEADER_NAME: usize = 200;

/// A `ctx` field (or the data behind a `ctx` method).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    Client,
    Listener,
    Stage,
    Helo,
    Tls,
    TlsProtocol,
    TlsCipher,
    Auth,
    Authenticated,
    Sender,
    Rcpt,
    Recipients,
    Size,
    Headers,
    Body,
    Parts,
    /// `ctx.rate(kind)`: the client's rate-limit counters.
    Rates,
    /// `ctx.spf`, `ctx.spf_helo`: SPF's results (checked at MAIL).
    Spf,
    /// `ctx.dkim`, `ctx.dmarc`, `ctx.arc`, `ctx.iprev`...: the checks made at DATA.
    MailAuth,
    /// `ctx.local_user`, `ctx.uid`: who submitted a message through `sendmail`.
    Submitter,
    /// `ctx.dnsbl_score(list)`: the client, HELO name and sender a DNS list asks about.
    Dnsbl,
}

use Stage::{Data, Helo, Mail, Rcpt, Route};

impl Field {
    /// Every property a script can read on `ctx`, by name.
    pub(crate) const PROPERTIES: [(&'static str, Field); 26] = [
        ("client", Field::Client),
        ("listener", Field::Listener),
        ("stage", Field::Stage),
        ("helo", Field::Helo),
        ("tls", Field::Tls),
        ("tls_protocol", Field::TlsProtocol),
        ("tls_cipher", Field::TlsCipher),
        ("auth", Field::Auth),
        ("authenticated", Field::Authenticated),
        ("sender", Field::Sender),
        ("rcpt", Field::Rcpt),
        ("recipients", Field::Recipients),
        ("size", Field::Size),
        ("headers", Field::Headers),
        ("spf", Field::Spf),
        ("spf_helo", Field::Spf),
        ("dkim", Field::MailAuth),
        ("dkim_signatures", Field::MailAuth),
        ("dmarc", Field::MailAuth),
        ("dmarc_policy", Field::MailAuth),
        ("dmarc_domain", Field::MailAuth),
        ("arc", Field::MailAuth),
        ("iprev", Field::MailAuth),
        ("iprev_name", Field::MailAuth),
        ("local_user", Field::Submitter),
        ("uid", Field::Submitter),
    ];

    pub(crate) fn property(name: &str) -> Option<Field> {
        Self::PROPERTIES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, f)| f)
    }

    /// The stages at which this field exists.
    pub(crate) fn stages(self) -> &'static [Stage] {
        match self {
            Field::Client | Field::Listener | Field::Stage => &Stage::ALL,
            Field::Helo | Field::Tls | Field::TlsProtocol | Field::TlsCipher => {
                &[Helo, Mail, Rcpt, Data]
            }
            Field::Auth | Field::Authenticated => &[Mail, Rcpt, Data],
            Field::Sender => &[Mail, Rcpt, Data, Route],
            Field::Rcpt => &[Rcpt, Route],
            Field::Recipients => &[Rcpt, Data],
            Field::Size | Field::Headers | Field::Body | Field::Parts | Field::MailAuth => &[Data],
            Field::Spf => &[Mail, Rcpt, Data],
            Field::Rates | Field::Submitter | Field::Dnsbl => {
                &[Stage::Connect, Helo, Mail, Rcpt, Data]
            }
        }
    }

    pub(crate) fn available_at(self, stage: Stage) -> bool {
        self.stages().contains(&stage)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// A `ctx` method: its name and the data it reads. A method that reads nothing, or
/// data that exists only there, is for data hooks only.
pub(crate) struct Method {
    pub name: &'static str,
    pub reads: Option<Field>,
}

impl Method {
    /// The stages whose hooks may call it.
    pub(crate) fn stages(&self) -> &'static [Stage] {
        match self.reads {
            Some(Field::Rates) => Field::Rates.stages(),
            Some(Field::Dnsbl) => Field::Dnsbl.stages(),
            _ => &[Data],
        }
    }
}

/// Every method a script can call on `ctx`.
pub(crate) const METHODS: [Method; 10] = [
    Method {
        name: "dnsbl_score",
        reads: Some(Field::Dnsbl),
    },
    Method {
        name: "rate",
        reads: Some(Field::Rates),
    },
    Method {
        name: "header",
        reads: Some(Field::Headers),
    },
    Method {
        name: "headers_named",
        reads: Some(Field::Headers),
    },
    Method {
        name: "body",
        reads: Some(Field::Body),
    },
    Method {
        name: "parts",
        reads: Some(Field::Parts),
    },
    Method {
        name: "add_header",
        reads: None,
    },
    Method {
        name: "remove_header",
        reads: None,
    },
    Method {
        name: "replace_header",
        reads: None,
    },
    Method {
        name: "content_filter",
        reads: None,
    },
];

/// Which fields a hook reads: only those are copied into `ctx` at each call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldSet(u32);

impl FieldSet {
    pub(crate) const ALL: FieldSet = FieldSet(u32::MAX);

    pub(crate) fn insert(&mut self, field: Field) {
        self.0 |= field.bit();
    }

    pub(crate) fn contains(self, field: Field) -> bool {
        self.0 & field.bit() != 0
    }
}

/// An address object: `ctx.sender`, `ctx.rcpt`, the elements of `ctx.recipients`
/// and what `mta::parse_address` returns.
#[derive(Clone, Debug)]
pub(crate) struct Address {
    /// The address as given, without angle brackets.
    pub address: ImmutableString,
    /// Everything before the last `@` (the whole address when there is none).
    pub local: ImmutableString,
    /// The lowercased domain it will be routed to; empty when there is none or the
    /// local part holds routing syntax (`%`, `!`, a quoted `@`: see
    /// [`routing_domain`]), so a relay check in a script cannot be fooled either.
    pub domain: ImmutableString,
    /// The null reverse path `<>`.
    pub is_null: bool,
}

impl Address {
    pub(crate) fn parse(text: &str) -> Address {
        let trimmed = text.trim();
        let bare = trimmed
            .strip_prefix('<')
            .and_then(|s| s.strip_suffix('>'))
            .unwrap_or(trimmed);
        if bare.is_empty() {
            return Address {
                address: ImmutableString::new(),
                local: ImmutableString::new(),
                domain: ImmutableString::new(),
                is_null: true,
            };
        }
        let local = bare.rsplit_once('@').map_or(bare, |(l, _)| l);
        Address {
            address: bare.into(),
            local: local.into(),
            domain: routing_domain(bare).map_or_else(ImmutableString::new, Into::into),
            is_null: false,
        }
    }
}

/// `ctx.client`.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    pub ip: ImmutableString,
    pub port: i64,
}

/// The header block, copied once into one string: `Name:value\n` per header,
/// values unfolded (CR and LF removed; `\n` therefore only ends a record, and a name
/// has no `:`). One allocation the size of the header block, whatever the number of
/// headers: no per-header allocation, no index; lookups scan it (they check the
/// call's deadline first, see [`super::engine::check_time`]).
#[derive(Debug, Default)]
struct HeaderStore {
    text: String,
    count: usize,
}

impl HeaderStore {
    fn new(headers: &crate::policy::Headers) -> Self {
        let len = headers.iter().map(|h| h.line().len() + 1).sum();
        let mut store = HeaderStore {
            text: String::with_capacity(len),
            count: headers.len(),
        };
        for h in headers {
            store.text.push_str(h.name());
            store.text.push(':');
            // Unfold: drop the CR/LF of continuation lines, keep the whitespace.
            store.text.extend(
                h.value()
                    .trim_start_matches([' ', '\t'])
                    .chars()
                    .filter(|&c| c != '\r' && c != '\n'),
            );
            store.text.push('\n');
        }
        store
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.text
            .split_terminator('\n')
            .map(|record| record.split_once(':').unwrap_or((record, "")))
    }

    fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// An array of `n` elements would pass the script's `max_array_size`: refused before
/// it is built (Rhai checks sizes only once a native function returns).
fn check_array(n: usize, max: usize, what: &str) -> Res<()> {
    if max > 0 && n > max {
        return Err(script_error(format!(
            "{what}: {n} elements, more than the array size limit ({max})"
        )));
    }
    Ok(())
}

/// The data behind one call's `ctx`.
#[derive(Debug)]
pub(crate) struct CtxData {
    stage: Stage,
    client: Option<Client>,
    listener: ImmutableString,
    helo: ImmutableString,
    tls: Option<(ImmutableString, ImmutableString)>,
    auth: ImmutableString,
    /// `ctx.local_user` (the login, or `uid:N`; `""` for mail that did not come
    /// through `sendmail`) and `ctx.uid` (`-1` then).
    local_user: ImmutableString,
    uid: i64,
    sender: Option<Address>,
    rcpt: Option<Address>,
    recipients: Vec<Address>,
    size: i64,
    headers: HeaderStore,
    /// The array size limit, for the arrays `ctx` hands out.
    max_array: usize,
    body: ImmutableString,
    parts: Array,
    changes: Mutex<Vec<HeaderChange>>,
    max_changes: usize,
    /// `ctx.content_filter(name)`: the last one.
    filter: Mutex<Option<String>>,
    /// `ctx.rate(kind)`, by [`RateKind::ALL`]: `-1` where no limit is set.
    rates: [i64; 5],
    /// The `authentication` results (every one `skipped` when nothing was checked).
    auth_results: crate::mailauth::AuthResults,
    /// What `ctx.dnsbl_score` asks about: the client, the HELO name, the sender.
    dnsbl_key: Option<(std::net::IpAddr, Option<String>, Option<String>)>,
}

/// `ctx`, as Rhai sees it (type name `Context`).
#[derive(Clone, Debug)]
pub(crate) struct Ctx(Arc<CtxData>);

type Res<T> = Result<T, Box<EvalAltResult>>;

fn script_error(message: String) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        message.into(),
        rhai::Position::NONE,
    ))
}

fn opt_str(s: Option<&str>) -> ImmutableString {
    s.map_or_else(ImmutableString::new, Into::into)
}

impl Ctx {
    /// Copies the fields in `used` (and available at the input's stage) out of the
    /// input. `max_body` bounds `ctx.body()`; `max_changes` the header changes;
    /// `max_array` the arrays `ctx` gives (`headers`, `headers_named`).
    pub(crate) fn build(
        input: &HookInput<'_>,
        used: FieldSet,
        max_body: usize,
        max_changes: usize,
        max_array: usize,
    ) -> Ctx {
        let stage = input.stage;
        let want = |f: Field| used.contains(f) && f.available_at(stage);
        let client = want(Field::Client).then(|| Client {
            ip: input.client_ip.to_string().into(),
            port: i64::from(input.client_port),
        });
        let tls = if want(Field::Tls) || want(Field::TlsProtocol) || want(Field::TlsCipher) {
            input
                .tls
                .map(|(p, c)| (ImmutableString::from(p), ImmutableString::from(c)))
        } else {
            None
        };
        let recipients = if want(Field::Recipients) {
            input.recipients.iter().map(|r| Address::parse(r)).collect()
        } else {
            Vec::new()
        };
        let body = match input.body {
            Some(body) if want(Field::Body) => lossy_prefix(body, max_body).into(),
            _ => ImmutableString::new(),
        };
        let parts = match input.message {
            Some(message) if want(Field::Parts) => parts_of(message, max_body),
            _ => Array::new(),
        };
        let mut rates = [-1; 5];
        if want(Field::Rates)
            && let Some(view) = input.rates
        {
            for (slot, kind) in rates.iter_mut().zip(RateKind::ALL) {
                *slot = view.count(kind, input.client_ip).map_or(-1, i64::from);
            }
        }
        Ctx(Arc::new(CtxData {
            stage,
            client,
            listener: if want(Field::Listener) {
                input.listener.into()
            } else {
                ImmutableString::new()
            },
            helo: if want(Field::Helo) {
                opt_str(input.helo)
            } else {
                ImmutableString::new()
            },
            tls,
            auth: if want(Field::Auth) {
                opt_str(input.auth_user)
            } else {
                ImmutableString::new()
            },
            local_user: match input.submitter {
                Some(s) if want(Field::Submitter) => s.name().into(),
                _ => ImmutableString::new(),
            },
            uid: input.submitter.map_or(-1, |s| i64::from(s.uid)),
            sender: want(Field::Sender)
                .then_some(input.sender)
                .flatten()
                .map(Address::parse),
            rcpt: want(Field::Rcpt)
                .then_some(input.rcpt)
                .flatten()
                .map(Address::parse),
            recipients,
            size: input
                .size
                .map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX)),
            headers: if want(Field::Headers) {
                HeaderStore::new(input.headers)
            } else {
                HeaderStore::default()
            },
            max_array,
            body,
            parts,
            changes: Mutex::new(Vec::new()),
            max_changes,
            filter: Mutex::new(None),
            rates,
            auth_results: if want(Field::Spf) || want(Field::MailAuth) {
                input.auth.cloned().unwrap_or_default()
            } else {
                Default::default()
            },
            dnsbl_key: want(Field::Dnsbl).then(|| {
                (
                    input.client_ip,
                    input.helo.map(str::to_owned),
                    input.sender.map(str::to_owned),
                )
            }),
        }))
    }

    /// The header changes the script asked for, in order.
    /// The content filter the script chose, if any.
    pub(crate) fn take_filter(&self) -> Option<String> {
        self.0
            .filter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    pub(crate) fn take_changes(&self) -> Vec<HeaderChange> {
        std::mem::take(
            &mut *self
                .0
                .changes
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    fn need(&self, field: Field, name: &str) -> Res<()> {
        if field.available_at(self.0.stage) {
            Ok(())
        } else {
            Err(script_error(format!(
                "ctx.{name} is not available in a {} hook",
                self.0.stage
            )))
        }
    }

    fn need_data(&self, method: &str) -> Res<()> {
        if self.0.stage == Stage::Data {
            Ok(())
        } else {
            Err(script_error(format!(
                "ctx.{method}() is only available in a data hook, not in a {} hook",
                self.0.stage
            )))
        }
    }

    fn change(&self, change: HeaderChange) -> Res<()> {
        let mut changes = self
            .0
            .changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if changes.len() >= self.0.max_changes {
            return Err(script_error(format!(
                "too many header changes (at most {})",
                self.0.max_changes
            )));
        }
        changes.push(change);
        Ok(())
    }
}

/// The first `max` bytes of `body` as text, invalid UTF-8 replaced, never more
/// than `max` bytes once replaced.
fn lossy_prefix(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(max)]);
    if text.len() <= max {
        return text.into_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// `ctx.parts()`: the message's MIME parts (see [`crate::message::mime`]), part 0
/// the message itself, as maps. The text of text parts is decoded; all of it
/// together is at most `max_text` bytes, as for `ctx.body()`.
fn parts_of(message: &[u8], max_text: usize) -> Array {
    let mime = crate::message::mime::Mime::parse(message);
    let mut left = max_text;
    mime.parts
        .iter()
        .map(|p| {
            let text = p.decoded_text(message, left);
            left -= text.len().min(left);
            let mut map = Map::new();
            map.insert("index".into(), Dynamic::from(p.index as i64));
            map.insert("depth".into(), Dynamic::from(p.depth as i64));
            map.insert(
                "content_type".into(),
                ImmutableString::from(p.content_type.as_str()).into(),
            );
            map.insert(
                "filename".into(),
                ImmutableString::from(p.filename.as_deref().unwrap_or("")).into(),
            );
            map.insert(
                "size".into(),
                Dynamic::from(i64::try_from(p.size).unwrap_or(i64::MAX)),
            );
            map.insert("is_attachment".into(), Dynamic::from(p.is_attachment));
            map.insert("is_text".into(), Dynamic::from(p.is_text));
            map.insert(
                "encoding".into(),
                ImmutableString::from(p.encoding.as_str()).into(),
            );
            map.insert("text".into(), ImmutableString::from(text).into());
            Dynamic::from_map(map)
        })
        .collect()
}

/// A header name a script may use: printable ASCII without `:` or space.
fn check_header_name(name: &str) -> Res<()> {
    if name.is_empty()
        || name.len() > MAX_HEADER_NAME
        || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
    {
        return Err(script_error(format!(
            "invalid header name {:?}: it must be 1 to {MAX_HEADER_NAME} printable ASCII characters without ':' or spaces",
            crate::config::sanitize_text(name, 80)
        )));
    }
    Ok(())
}

/// A header value made safe: CR, LF and other control characters removed (a tab
/// becomes a space), surrounding whitespace trimmed, the whole line bounded.
fn clean_header_value(name: &str, value: &str) -> Res<String> {
    let clean: String = value
        .chars()
        .filter_map(|c| match c {
            '\t' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect();
    let clean = clean.trim().to_owned();
    if name.len() + 2 + clean.len() > MAX_HEADER_LINE {
        return Err(script_error(format!(
            "header {name} is too long: a header line is at most {MAX_HEADER_LINE} bytes"
        )));
    }
    Ok(clean)
}

/// Registers `Context`, `Address` and `Client` with their getters and methods.
pub(crate) fn register(engine: &mut rhai::Engine) {
    engine
        .register_type_with_name::<Ctx>("Context")
        .register_type_with_name::<Address>("Address")
        .register_type_with_name::<Client>("Client");

    engine
        .register_get("client", |c: &mut Ctx| -> Res<Client> {
            c.need(Field::Client, "client")?;
            Ok(c.0.client.clone().unwrap_or(Client {
                ip: ImmutableString::new(),
                port: 0,
            }))
        })
        .register_get("listener", |c: &mut Ctx| c.0.listener.clone())
        .register_get("stage", |c: &mut Ctx| {
            ImmutableString::from(c.0.stage.as_str())
        })
        .register_get("helo", |c: &mut Ctx| -> Res<ImmutableString> {
            c.need(Field::Helo, "helo")?;
            Ok(c.0.helo.clone())
        })
        .register_get("tls", |c: &mut Ctx| -> Res<bool> {
            c.need(Field::Tls, "tls")?;
            Ok(c.0.tls.is_some())
        })
        .register_get("tls_protocol", |c: &mut Ctx| -> Res<ImmutableString> {
            c.need(Field::TlsProtocol, "tls_protocol")?;
            Ok(c.0.tls.as_ref().map(|t| t.0.clone()).unwrap_or_default())
        })
        .register_get("tls_cipher", |c: &mut Ctx| -> Res<ImmutableString> {
            c.need(Field::TlsCipher, "tls_cipher")?;
            Ok(c.0.tls.as_ref().map(|t| t.1.clone()).unwrap_or_default())
        })
        .register_get("auth", |c: &mut Ctx| -> Res<ImmutableString> {
            c.need(Field::Auth, "auth")?;
            Ok(c.0.auth.clone())
        })
        .register_get("local_user", |c: &mut Ctx| -> Res<ImmutableString> {
            c.need(Field::Submitter, "local_user")?;
            Ok(c.0.local_user.clone())
        })
        .register_get("uid", |c: &mut Ctx| -> Res<i64> {
            c.need(Field::Submitter, "uid")?;
            Ok(c.0.uid)
        })
        .register_get("authenticated", |c: &mut Ctx| -> Res<bool> {
            c.need(Field::Authenticated, "authenticated")?;
            Ok(!c.0.auth.is_empty())
        })
        .register_get("sender", |c: &mut Ctx| -> Res<Address> {
            c.need(Field::Sender, "sender")?;
            Ok(c.0.sender.clone().unwrap_or_else(|| Address::parse("")))
        })
        .register_get("rcpt", |c: &mut Ctx| -> Res<Address> {
            c.need(Field::Rcpt, "rcpt")?;
            Ok(c.0.rcpt.clone().unwrap_or_else(|| Address::parse("")))
        })
        .register_get("recipients", |c: &mut Ctx| -> Res<Array> {
            c.need(Field::Recipients, "recipients")?;
            check_time()?;
            check_array(c.0.recipients.len(), c.0.max_array, "ctx.recipients")?;
            Ok(c.0.recipients.iter().cloned().map(Dynamic::from).collect())
        })
        .register_get("size", |c: &mut Ctx| -> Res<i64> {
            c.need(Field::Size, "size")?;
            Ok(c.0.size)
        })
        .register_get("spf", |c: &mut Ctx| -> Res<ImmutableString> {
            c.need(Field::Spf, "spf")?;
            Ok(c.0.auth_results.spf.as_str().into())
        })
        .register_get("spf_helo", |c: &mut Ctx| -> Res<ImmutableString> {
            c.need(Field::Spf, "spf_helo")?;
            Ok(c.0.auth_results.spf_helo.as_str().into())
        })
        .register_get("dkim", |c: &mut Ctx| -> Res<ImmutableString> {
            c.need(Field::MailAuth, "dkim")?;
            Ok(c.0.auth_results.dkim.as_str().into())
        })
        .register_get("dkim_signatures", |c: &mut Ctx| -> Res<Array> {
            c.need(Field::MailAuth, "dkim_signatures")?;
            Ok(c.0
                .auth_results
                .dkim_signatures
                .iter()
                .map(|sig| {
                    let mut map = Map::new();
                    map.insert(
                        "result".into(),
                        ImmutableString::from(sig.result.as_str()).into(),
                    );
                    map.insert(
                        "domain".into(),
                        ImmutableString::from(sig.domain.as_str()).into(),
                    );
                    map.insert(
                        "selector".into(),
                        ImmutableString::from(sig.selector.as_str()).into(),
                    );
                    map.insert(
                        "reason".into(),
                        ImmutableString::from(sig.reason.as_str()).into(),
                    );
                    Dynamic::from_map(map)
                })
                .collect())
        })
        .register_get("dmarc", |c: &mut Ctx| -> Res<ImmutableString> {
            c.need(Field::MailAuth, "dmarc")?;
            Ok(c.0.auth_results.dmarc.as_str().into())
        })
        .register_get("dmarc_policy", |c: &mut Ctx| -> Res<ImmutableString> {
            c.need(Field::MailAuth, "dmarc_policy")?;
            Ok(c.0.auth_results.dmarc_policy.as_str().into())
        })
        .register_get("dmarc_domain", |c: &mut Ctx| -> Res<ImmutableString> {
            c.need(Field::MailAuth, "dmarc_domain")?;
            Ok(c.0.auth_results.dmarc_domain.as_str().into())
        })
        .register_get("arc", |c: &mut Ctx| -> Res<ImmutableString> {
            c.need(Field::MailAuth, "arc")?;
            Ok(c.0.auth_results.arc.as_str().into())
        })
        .register_get("iprev", |c: &mut Ctx| -> Res<ImmutableString> {
            c.need(Field::MailAuth, "iprev")?;
            Ok(c.0.auth_results.iprev.as_str().into())
        })
        .register_get("iprev_name", |c: &mut Ctx| -> Res<ImmutableString> {
            c.need(Field::MailAuth, "iprev_name")?;
            Ok(c.0.auth_results.iprev_name.as_str().into())
        })
        .register_get("headers", |c: &mut Ctx| -> Res<Array> {
            c.need(Field::Headers, "headers")?;
            check_time()?;
            check_array(
                c.0.headers.count,
                c.0.max_array,
                "ctx.headers (use ctx.header(name) or ctx.headers_named(name))",
            )?;
            Ok(c.0
                .headers
                .iter()
                .map(|(n, v)| {
                    let mut map = Map::new();
                    map.insert("name".into(), n.into());
                    map.insert("value".into(), v.into());
                    Dynamic::from_map(map)
                })
                .collect())
        })
        .register_fn(
            "header",
            |c: &mut Ctx, name: &str| -> Res<ImmutableString> {
                c.need_data("header")?;
                check_time()?;
                Ok(c.0
                    .headers
                    .named(name)
                    .next()
                    .map(Into::into)
                    .unwrap_or_default())
            },
        )
        .register_fn("headers_named", |c: &mut Ctx, name: &str| -> Res<Array> {
            c.need_data("headers_named")?;
            check_time()?;
            check_array(
                c.0.headers.named(name).count(),
                c.0.max_array,
                "ctx.headers_named()",
            )?;
            Ok(c.0
                .headers
                .named(name)
                .map(|v| Dynamic::from(ImmutableString::from(v)))
                .collect())
        })
        .register_fn("body", |c: &mut Ctx| -> Res<ImmutableString> {
            c.need_data("body")?;
            Ok(c.0.body.clone())
        })
        .register_fn("rate", |c: &mut Ctx, kind: &str| -> Res<i64> {
            c.need(Field::Rates, "rate()")?;
            match RateKind::ALL.iter().position(|k| k.as_str() == kind) {
                Some(i) => Ok(c.0.rates[i]),
                None => Err(script_error(format!(
                    "ctx.rate(\"{kind}\"): no such rate limit; one of {}",
                    RateKind::ALL.map(RateKind::as_str).join(", ")
                ))),
            }
        })
        .register_fn(
            "dnsbl_score",
            |nc: rhai::NativeCallContext, c: &mut Ctx, list: &str| -> Res<i64> {
                c.need(Field::Dnsbl, "dnsbl_score()")?;
                let Some((ip, helo, sender)) = c.0.dnsbl_key.clone() else {
                    return Ok(0);
                };
                // a list's own timeout, within the hook's network budget
                super::engine::with_network(&nc, super::engine::NETWORK_BUDGET, |l, _| {
                    match l.dnsbl_score(list, ip, helo.as_deref(), sender.as_deref()) {
                        Some(Ok(score)) => Ok(score),
                        Some(Err(e)) => Err(super::engine::error(
                            &nc,
                            format!(
                                "ctx.dnsbl_score({:?}): {}",
                                crate::config::sanitize_text(list, 80),
                                crate::config::sanitize_text(&e, 200)
                            ),
                        )),
                        None => Err(super::engine::error(
                            &nc,
                            format!(
                                "ctx.dnsbl_score: no dnsbl named {:?}",
                                crate::config::sanitize_text(list, 80)
                            ),
                        )),
                    }
                })
            },
        )
        .register_fn("parts", |c: &mut Ctx| -> Res<Array> {
            c.need_data("parts")?;
            Ok(c.0.parts.clone())
        })
        .register_fn(
            "add_header",
            |c: &mut Ctx, name: &str, value: &str| -> Res<()> {
                c.need_data("add_header")?;
                check_header_name(name)?;
                let value = clean_header_value(name, value)?;
                c.change(HeaderChange::Add {
                    name: name.to_owned(),
                    value,
                })
            },
        )
        .register_fn("remove_header", |c: &mut Ctx, name: &str| -> Res<()> {
            c.need_data("remove_header")?;
            check_header_name(name)?;
            c.change(HeaderChange::Remove {
                name: name.to_owned(),
            })
        })
        .register_fn(
            "replace_header",
            |c: &mut Ctx, name: &str, value: &str| -> Res<()> {
                c.need_data("replace_header")?;
                check_header_name(name)?;
                let value = clean_header_value(name, value)?;
                c.change(HeaderChange::Replace {
                    name: name.to_owned(),
                    value,
                })
            },
        )
        .register_fn("content_filter", |c: &mut Ctx, name: &str| -> Res<()> {
            c.need_data("content_filter")?;
            if name.is_empty() || !name.chars().all(|ch| ch.is_ascii_graphic()) {
                return Err(script_error(format!(
                    "ctx.content_filter(): `{name}` is not a content filter name"
                )));
            }
            *c.0.filter.lock().unwrap_or_else(PoisonError::into_inner) = Some(name.to_owned());
            Ok(())
        })
        .register_fn("to_string", |_: &mut Ctx| "Context")
        .register_fn("to_debug", |c: &mut Ctx| format!("Context({})", c.0.stage));

    engine
        .register_get("address", |a: &mut Address| a.address.clone())
        .register_get("local", |a: &mut Address| a.local.clone())
        .register_get("domain", |a: &mut Address| a.domain.clone())
        .register_get("is_null", |a: &mut Address| a.is_null)
        .register_fn("to_string", |a: &mut Address| a.address.clone())
        .register_fn("to_debug", |a: &mut Address| format!("<{}>", a.address));

    engine
        .register_get("ip", |c: &mut Client| c.ip.clone())
        .register_get("port", |c: &mut Client| c.port)
        .register_fn("to_string", |c: &mut Client| c.ip.clone())
        .register_fn("to_debug", |c: &mut Client| {
            format!("Client({}:{})", c.ip, c.port)
        });
}
