//! `mtactl queue shape`: Postfix's `qshape`, messages by destination domain and age.
//!
//! The same table as qshape's defaults (`qshape -b 10 -t 5`, an 80-column screen): one
//! column of totals (`T`), then buckets of age since arrival whose headings are their
//! upper bounds in minutes, doubling from `--bucket-minutes` (5 10 20 ... 1280, then
//! `1280+`), one row per domain. Each pending recipient counts once, in its domain
//! (lower-cased, without a leading or trailing dot); `--senders` counts each message's
//! sender domain instead (the null sender as `MAILER-DAEMON`, qshape's `-s`). Rows are
//! sorted as qshape sorts them: by count, then shorter names first (ties, which qshape
//! leaves to Perl's hash order, alphabetically); `TOTAL` is one of the rows. A name
//! longer than its column shows its end after a `+`. Not here: qshape's `-p` (parent
//! domains) and `-w` (wider screens).

use std::collections::BTreeMap;

use super::mailq::Entry;

/// qshape's screen width.
const WIDTH: usize = 80;
/// The narrowest the domain column gets (qshape's `$dwidth`).
const MIN_DOMAIN_WIDTH: usize = 18;

/// How the table is cut: qshape's `-t`, `-b`, `-l` and `-s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// The first bucket's width in minutes (`-t`, default 5).
    pub bucket_minutes: u64,
    /// How many buckets (`-b`, default 10); the last one holds everything older.
    pub buckets: usize,
    /// Buckets of equal width instead of doubling ones (`-l`).
    pub linear: bool,
    /// Count sender domains, once per message, instead of recipient domains (`-s`).
    pub senders: bool,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            bucket_minutes: 5,
            buckets: 10,
            linear: false,
            senders: false,
        }
    }
}

impl Shape {
    /// The bucket (1..=buckets) of a message `age_secs` old: qshape's `bucket`.
    fn bucket(&self, age_secs: i64) -> usize {
        let m = age_secs as f64 / (60.0 * self.bucket_minutes.max(1) as f64);
        let b = if m < 1.0 {
            1
        } else if self.linear {
            (m + 1.0) as usize
        } else {
            2 + m.log2() as usize
        };
        b.min(self.buckets.max(1))
    }

    /// The headings: `T`, then each bucket's upper bound in minutes, the last with `+`.
    fn headings(&self) -> Vec<String> {
        let buckets = self.buckets.max(1);
        let mut heads = vec!["T".to_owned()];
        let mut t: u64 = 0;
        for i in 1..=buckets {
            if i < buckets {
                t = t.saturating_add(if t > 0 && !self.linear {
                    t
                } else {
                    self.bucket_minutes
                });
                heads.push(t.to_string());
            } else {
                heads.push(format!("{t}+"));
            }
        }
        heads
    }

    /// The table for `entries` at `now` (unix seconds), each line ending in `\n`.
    pub fn render(&self, entries: &[Entry], now: i64) -> String {
        let columns = self.buckets.max(1) + 1;
        let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut add = |name: String, bucket: usize| {
            let row = counts.entry(name).or_insert_with(|| vec![0; columns]);
            row[0] += 1;
            row[bucket] += 1;
        };
        for e in entries {
            let bucket = self.bucket(now.saturating_sub(e.arrival));
            let addresses: Vec<&str> = if self.senders {
                vec![e.sender.as_str()]
            } else {
                e.recipients.iter().map(|r| r.address.as_str()).collect()
            };
            for a in addresses {
                add("TOTAL".to_owned(), bucket);
                add(domain(a), bucket);
            }
        }
        let total = counts
            .get("TOTAL")
            .cloned()
            .unwrap_or_else(|| vec![0; columns]);
        let heads = self.headings();
        let widths: Vec<usize> = heads
            .iter()
            .zip(&total)
            .map(|(h, n)| {
                let l = h.len().max(n.to_string().len());
                if l > 2 { l + 1 } else { 3 }
            })
            .collect();
        let name_width = WIDTH
            .saturating_sub(widths.iter().sum())
            .max(MIN_DOMAIN_WIDTH);
        let mut rows: Vec<(&String, &Vec<u64>)> = counts.iter().collect();
        rows.sort_by(|a, b| {
            b.1[0]
                .cmp(&a.1[0])
                .then(a.0.len().cmp(&b.0.len()))
                .then(a.0.cmp(b.0))
        });
        let mut out = row("", &heads, &widths, name_width);
        if counts.is_empty() {
            let zeros: Vec<String> = total.iter().map(u64::to_string).collect();
            out.push_str(&row("TOTAL", &zeros, &widths, name_width));
        }
        for (name, n) in rows {
            let cells: Vec<String> = n.iter().map(u64::to_string).collect();
            out.push_str(&row(name, &cells, &widths, name_width));
        }
        out
    }
}

/// qshape's `pdomain`: the name right-aligned (its end after `+` when too long), then
/// each cell right-aligned in its column.
fn row(name: &str, cells: &[String], widths: &[usize], name_width: usize) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut line = if chars.len() > name_width {
        let tail: String = chars[chars.len() - (name_width - 1)..].iter().collect();
        format!("+{tail}")
    } else {
        format!("{name:>name_width$}")
    };
    for (cell, w) in cells.iter().zip(widths) {
        line.push_str(&format!("{cell:>w$}"));
    }
    line.push('\n');
    line
}

/// An address's domain as qshape counts it: lower case, what follows the last `@`,
/// `..` as `.`, without a leading or trailing dot; the null sender is `MAILER-DAEMON`.
/// Control characters become `?`, so no row can forge a line.
fn domain(address: &str) -> String {
    if address.is_empty() {
        return "MAILER-DAEMON".to_owned();
    }
    let lower = address.to_lowercase();
    let mut d = lower
        .rsplit_once('@')
        .map_or(lower.as_str(), |(_, d)| d)
        .to_owned();
    while d.contains("..") {
        d = d.replace("..", ".");
    }
    let d = d.strip_prefix('.').unwrap_or(&d);
    let d = d.strip_suffix('.').unwrap_or(d);
    let d = if d.is_empty() { &lower } else { d };
    d.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::mailq::{Pending, Queue};

    fn entry(arrival: i64, sender: &str, rcpts: &[&str]) -> Entry {
        Entry {
            id: "0".into(),
            queue: Queue::Deferred,
            size: 1,
            arrival,
            sender: sender.into(),
            recipients: rcpts
                .iter()
                .map(|a| Pending {
                    address: (*a).into(),
                    reason: String::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn buckets_double_from_five_minutes_as_qshape_s() {
        let s = Shape::default();
        assert_eq!(
            s.headings().join(" "),
            "T 5 10 20 40 80 160 320 640 1280 1280+"
        );
        // [0,5) [5,10) [10,20) ... [640,1280) [1280,∞) minutes
        for (minutes, bucket) in [
            (0, 1),
            (4, 1),
            (5, 2),
            (9, 2),
            (10, 3),
            (19, 3),
            (20, 4),
            (639, 8),
            (640, 9),
            (1279, 9),
            (1280, 10),
            (100_000, 10),
        ] {
            assert_eq!(s.bucket(minutes * 60), bucket, "{minutes} minutes");
        }
        // a clock that went back: the first bucket
        assert_eq!(s.bucket(-3600), 1);
        let linear = Shape {
            linear: true,
            buckets: 4,
            ..Shape::default()
        };
        assert_eq!(linear.headings().join(" "), "T 5 10 15 15+");
        assert_eq!(linear.bucket(14 * 60), 3);
        assert_eq!(linear.bucket(20 * 60), 4);
    }

    /// What `qshape` prints for the same queue (recomputed by hand from its code: an
    /// 80-column screen: 3-character columns but for `160`..`1280+`, the name in the rest).
    #[test]
    fn the_table_is_qshape_s() {
        let now = 1_000_000;
        let entries = [
            entry(now - 60, "a@src.test", &["x@Down.Test", "y@down.test."]),
            entry(now - 7 * 60, "", &["z@slow.test"]),
            entry(now - 2000 * 60, "b@src.test", &["w@down.test"]),
        ];
        let table = Shape::default().render(&entries, now);
        // the name in 80 - 41 columns
        let line = |name: &str, cells: &str| format!("{name:>39}{cells}\n");
        let heading = line("", "  T  5 10 20 40 80 160 320 640 1280 1280+");
        let expected = [
            heading.clone(),
            line("TOTAL", "  4  2  1  0  0  0   0   0   0    0     1"),
            line("down.test", "  3  2  0  0  0  0   0   0   0    0     1"),
            line("slow.test", "  1  0  1  0  0  0   0   0   0    0     0"),
        ];
        assert_eq!(table, expected.concat());
        let senders = Shape {
            senders: true,
            ..Shape::default()
        }
        .render(&entries, now);
        assert!(
            senders.contains(&line(
                "MAILER-DAEMON",
                "  1  0  1  0  0  0   0   0   0    0     0"
            )),
            "{senders}"
        );
        assert!(
            senders.contains(&line(
                "src.test",
                "  2  1  0  0  0  0   0   0   0    0     1"
            )),
            "{senders}"
        );
        // an empty queue still has its heading and TOTAL
        assert_eq!(
            Shape::default().render(&[], now),
            heading + line("TOTAL", "  0  0  0  0  0  0   0   0   0    0     0").as_str()
        );
    }

    #[test]
    fn long_and_hostile_names_cannot_break_the_table() {
        let long = format!("x@{}.example", "a".repeat(60));
        let table = Shape::default().render(&[entry(0, "", &[&long, "v@evil\r\nTOTAL"])], 0);
        for line in table.lines() {
            assert_eq!(line.chars().count(), 80, "{line:?}");
        }
        assert!(
            table.contains(&format!("+{}.example", "a".repeat(30))),
            "{table}"
        );
        assert!(table.contains("evil??total"), "{table}");
    }
}
