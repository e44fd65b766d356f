//! Writing KDL: quoted strings and rules with their conditions.

/// `s` as a KDL string literal (`"..."`, with `\`, `"` and control characters escaped),
/// as `mtactl config` writes values.
pub use crate::config::settings::quote as q;

/// A rule condition: `client="mynetworks"`, `authenticated=#true`, `not-rcpt-domain="x"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    /// The property without `not-`: `client`, `rcpt-domain`, `authenticated`.
    pub key: String,
    pub value: CondValue,
    pub negated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CondValue {
    Str(String),
    Bool(bool),
}

impl Cond {
    pub fn s(key: &str, value: impl Into<String>) -> Cond {
        Cond {
            key: key.to_owned(),
            value: CondValue::Str(value.into()),
            negated: false,
        }
    }

    pub fn b(key: &str, value: bool) -> Cond {
        Cond {
            key: key.to_owned(),
            value: CondValue::Bool(value),
            negated: false,
        }
    }

    /// The opposite condition (a boolean flips its value, others get `not-`).
    pub fn negate(&self) -> Cond {
        match self.value {
            CondValue::Bool(v) => Cond {
                value: CondValue::Bool(!v),
                ..self.clone()
            },
            CondValue::Str(_) => Cond {
                negated: !self.negated,
                ..self.clone()
            },
        }
    }

    /// `not-X-matches=A` and `not-X-matches=B` as one condition,
    /// `not-X-matches="(?:A)|(?:B)"` (neither matches): a rule has one value per
    /// property. `None` for any other pair.
    pub fn merge_negated(&self, other: &Cond) -> Option<Cond> {
        let (CondValue::Str(a), CondValue::Str(b)) = (&self.value, &other.value) else {
            return None;
        };
        (self.negated && other.negated && self.key == other.key && self.key.ends_with("-matches"))
            .then(|| Cond {
                value: CondValue::Str(format!("(?:{a})|(?:{b})")),
                ..self.clone()
            })
    }

    /// The property as written.
    pub fn property(&self) -> String {
        if self.negated {
            format!("not-{}", self.key)
        } else {
            self.key.clone()
        }
    }

    pub fn render(&self) -> String {
        match &self.value {
            CondValue::Str(s) => format!("{}={}", self.property(), q(s)),
            CondValue::Bool(b) => format!("{}=#{b}", self.property()),
        }
    }
}
