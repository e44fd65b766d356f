//! What became of each parameter: the import's report, as text and as JSON.

use serde::Serialize;

/// How a parameter was carried over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The mtad configuration does the same.
    Translated,
    /// Close, with a difference the entry names (never a more permissive one).
    Approximated,
    /// Nothing in mtad corresponds, and nothing needs to (paths, logging, Postfix's
    /// own processes).
    Ignored,
    /// mtad cannot do it: the entry says what was written instead (a refusal where a
    /// restriction stood, nothing where only a narrower behaviour results).
    Unsupported,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Translated => "translated",
            Status::Approximated => "approximated",
            Status::Ignored => "ignored",
            Status::Unsupported => "unsupported",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// `main.cf:12 smtpd_relay_restrictions`, `master.cf:17 submission -o ...`.
    pub place: String,
    pub parameter: String,
    pub status: Status,
    /// What it became in mtad (empty when nothing).
    pub mtad: String,
    /// Why, for anything but a plain translation.
    pub why: String,
}

/// The whole report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub source: String,
    pub postfix_defaults: String,
    pub compatibility_level: String,
    pub entries: Vec<Entry>,
}

impl Report {
    pub fn add(
        &mut self,
        place: impl Into<String>,
        parameter: impl Into<String>,
        status: Status,
        mtad: impl Into<String>,
        why: impl Into<String>,
    ) {
        let entry = Entry {
            place: place.into(),
            parameter: parameter.into(),
            status,
            mtad: mtad.into(),
            why: why.into(),
        };
        if !self.entries.contains(&entry) {
            self.entries.push(entry);
        }
    }

    pub fn count(&self, status: Status) -> usize {
        self.entries.iter().filter(|e| e.status == status).count()
    }

    /// The report as text: a summary, then the entries grouped by status, the ones
    /// that need a person first.
    pub fn text(&self) -> String {
        let mut out = format!(
            "mtactl import postfix: {}\nPostfix defaults of {}, compatibility_level {}\n\
             {} translated, {} approximated, {} ignored, {} unsupported\n",
            self.source,
            self.postfix_defaults,
            self.compatibility_level,
            self.count(Status::Translated),
            self.count(Status::Approximated),
            self.count(Status::Ignored),
            self.count(Status::Unsupported),
        );
        for status in [
            Status::Unsupported,
            Status::Approximated,
            Status::Ignored,
            Status::Translated,
        ] {
            let entries: Vec<&Entry> = self.entries.iter().filter(|e| e.status == status).collect();
            if entries.is_empty() {
                continue;
            }
            out.push_str(&format!("\n{}:\n", status.as_str()));
            for e in entries {
                out.push_str(&format!("  {} {}", e.place, e.parameter));
                if !e.mtad.is_empty() {
                    out.push_str(&format!(" -> {}", e.mtad));
                }
                out.push('\n');
                if !e.why.is_empty() {
                    out.push_str(&format!("      {}\n", e.why));
                }
            }
        }
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report is always serialisable")
    }
}
