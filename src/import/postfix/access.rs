//! Restriction names and access(5) tables → [`Item`]s.

use super::kdl::Cond;
use super::restrictions::{Action, Item, Rule};

/// Which address or name an access table is asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    Client,
    Helo,
    Sender,
    Recipient,
}

impl Subject {
    /// How Postfix's reply names what was refused.
    pub fn reply_prefix(self) -> &'static str {
        match self {
            Subject::Client => "Client host rejected",
            Subject::Helo => "Helo command rejected",
            Subject::Sender => "Sender address rejected",
            Subject::Recipient => "Recipient address rejected",
        }
    }
}

/// An access(5) result (`OK`, `REJECT text`, `450 text`, ...) as an item under the
/// conditions `conds`. `Err` with why, for a result mtad has no equivalent of.
pub fn access_action(
    result: &str,
    conds: Vec<Cond>,
    subject: Subject,
    comment: &str,
) -> Result<Option<Item>, String> {
    let result = result.trim();
    let (word, text) = match result.split_once(char::is_whitespace) {
        Some((w, t)) => (w, t.trim()),
        None => (result, ""),
    };
    let upper = word.to_ascii_uppercase();
    let (enhanced, rest) = split_enhanced(text);
    let rule = |action| {
        Some(Item::Decide {
            rule: Rule::new(action, conds.clone(), comment),
            may_permit: false,
        })
    };
    // REJECT, DEFER, 4NN and 5NN: the enhanced code given when its class fits
    let refusal = |code: u16| {
        let class = if code < 500 { "4" } else { "5" };
        let enhanced = match enhanced {
            Some(e) if e.starts_with(class) => e.to_owned(),
            _ => format!("{class}.7.1"),
        };
        let text = format!(
            "{}: {}",
            subject.reply_prefix(),
            if rest.is_empty() {
                "Access denied"
            } else {
                rest
            }
        );
        if class == "4" {
            rule(Action::Defer {
                code,
                enhanced,
                text,
            })
        } else {
            rule(Action::Reject {
                code,
                enhanced,
                text,
            })
        }
    };
    Ok(match upper.as_str() {
        "OK" | "RELAY" | "PERMIT" => Some(Item::Permit {
            conds,
            comment: comment.to_owned(),
        }),
        w if w.chars().all(|c| c.is_ascii_digit()) && !w.is_empty() && text.is_empty() => {
            Some(Item::Permit {
                conds,
                comment: comment.to_owned(),
            })
        }
        "REJECT" => refusal(554),
        "DEFER" => refusal(450),
        w if w.len() == 3 && (w.starts_with('4') || w.starts_with('5')) => refusal(
            w.parse()
                .map_err(|_| format!("`{result}` is not a reply"))?,
        ),
        "DUNNO" => None,
        "DISCARD" => rule(Action::Discard),
        "HOLD" => rule(Action::Hold),
        _ => {
            return Err(format!(
                "the access result `{result}` has no mtad equivalent"
            ));
        }
    })
}

/// `5.7.1 text` → (`5.7.1`, `text`).
fn split_enhanced(text: &str) -> (Option<&str>, &str) {
    let (first, rest) = match text.split_once(char::is_whitespace) {
        Some((f, r)) => (f, r.trim()),
        None => (text, ""),
    };
    let parts: Vec<&str> = first.split('.').collect();
    let enhanced = parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.chars().all(|c| c.is_ascii_digit()));
    if enhanced {
        (Some(first), rest)
    } else {
        (None, text)
    }
}

/// `s` with the characters that mean something in a regular expression escaped.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The condition an access(5) map key stands for, with the order Postfix looks it
/// up in (lower first): for addresses `user@domain` (0), `domain` and its parents
/// (1, longer names first), `user@` (3); for clients an address or a network given
/// by its leading octets; for HELO names the name and its parents.
/// `Err` for a key mtad cannot test (a client host name).
pub fn map_key(
    key: &str,
    subject: Subject,
    subdomains: bool,
) -> Result<(u32, usize, Cond), String> {
    let key = key.trim();
    match subject {
        Subject::Client => {
            if let Ok(ip) = key.parse::<std::net::IpAddr>() {
                return Ok((0, 0, Cond::s("client", ip.to_string())));
            }
            let octets: Vec<&str> = key.split('.').collect();
            if (1..4).contains(&octets.len())
                && octets
                    .iter()
                    .all(|o| !o.is_empty() && o.parse::<u8>().is_ok())
            {
                let mut full: Vec<String> = octets.iter().map(|o| o.to_string()).collect();
                let prefix = 8 * full.len();
                while full.len() < 4 {
                    full.push("0".into());
                }
                return Ok((
                    1,
                    usize::MAX - prefix,
                    Cond::s("client", format!("{}/{prefix}", full.join("."))),
                ));
            }
            Err(format!(
                "`{key}` names a client by its host name: mtad does not look client names up"
            ))
        }
        Subject::Helo => {
            let name = key.trim_start_matches('.');
            let re = if subdomains || key.starts_with('.') {
                let any = if key.starts_with('.') {
                    "(.+\\.)"
                } else {
                    "(.+\\.)?"
                };
                format!("^{any}{}$", regex_escape(name))
            } else {
                format!("^{}$", regex_escape(name))
            };
            Ok((1, usize::MAX - name.len(), Cond::s("helo-matches", re)))
        }
        Subject::Sender | Subject::Recipient => {
            let (exact, matches) = match subject {
                Subject::Sender => ("sender", "sender-matches"),
                _ => ("rcpt", "rcpt-matches"),
            };
            if key == "<>" && subject == Subject::Sender {
                return Ok((0, 0, Cond::s(exact, "")));
            }
            if let Some(user) = key.strip_suffix('@') {
                return Ok((3, 0, Cond::s(matches, format!("^{}@", regex_escape(user)))));
            }
            if key.contains('@') {
                return Ok((0, 0, Cond::s(exact, key.to_ascii_lowercase())));
            }
            let name = key.trim_start_matches('.');
            let re = if key.starts_with('.') {
                format!("@.+\\.{}$", regex_escape(name))
            } else if subdomains {
                format!("@(.+\\.)?{}$", regex_escape(name))
            } else {
                format!("@{}$", regex_escape(name))
            };
            Ok((1, usize::MAX - name.len(), Cond::s(matches, re)))
        }
    }
}
