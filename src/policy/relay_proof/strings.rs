//! Which combinations of string conditions a client can satisfy, each with a witness.
//!
//! A rule's conditions on one string (the HELO name, the sender, the recipient) are
//! regular expressions, literals and domain sets: all regular languages. Each becomes
//! a DFA (regex-automata's dense DFA, searching unanchored as [`regex::Regex::is_match`]
//! does), and a breadth-first walk of their product over an address alphabet visits
//! every combination of "matches / does not match" that some string reaches. When the
//! walk ends without hitting its bounds, the list is complete: no string over the
//! alphabet reaches a combination that is not in it. That is what lets
//! [`super`] say "closed" rather than "found nothing".

use std::collections::HashMap;

use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::util::primitives::StateID;
use regex_automata::util::{start, syntax};
use regex_automata::{Anchored, MatchKind};

/// The characters witnesses are made of: what addresses and HELO names are written
/// with (conditions are case-insensitive, so lower case is enough). Completeness is
/// over strings of these.
pub const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789.-_+%!@[]:";

/// Product states visited at most, and the longest witness, before giving up.
const MAX_STATES: usize = 200_000;
const MAX_LEN: usize = 128;

/// Why the walk could not give a complete answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incomplete {
    /// A pattern the DFA builder refused (too large, or a look-around it cannot do).
    Pattern { pattern: String, reason: String },
    /// The product grew past [`MAX_STATES`] states or [`MAX_LEN`] characters.
    TooLarge,
}

impl std::fmt::Display for Incomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Incomplete::Pattern { pattern, reason } => {
                write!(f, "cannot analyse the pattern {pattern:?}: {reason}")
            }
            Incomplete::TooLarge => write!(
                f,
                "the string conditions combine into more than {MAX_STATES} states"
            ),
        }
    }
}

/// One string condition, as a searching DFA.
pub struct Pred {
    dfa: dense::DFA<Vec<u32>>,
    start: StateID,
}

impl Pred {
    /// A pattern as `regex::Regex::is_match` reads it (unanchored), case-insensitive as
    /// every `*-matches=` condition is.
    pub fn regex(pattern: &str) -> Result<Self, Incomplete> {
        let refused = |e: &dyn std::fmt::Display| Incomplete::Pattern {
            pattern: pattern.to_owned(),
            reason: e.to_string(),
        };
        // Byte-oriented first (the alphabet is ASCII, where both modes agree); then
        // Unicode mode for patterns that need it.
        let build = |unicode: bool| -> Result<dense::DFA<Vec<u32>>, Box<dense::BuildError>> {
            dense::Builder::new()
                .syntax(
                    syntax::Config::new()
                        .case_insensitive(true)
                        .unicode(unicode)
                        .utf8(unicode),
                )
                .configure(
                    dense::DFA::config()
                        .match_kind(MatchKind::All)
                        .start_kind(StartKind::Unanchored)
                        .unicode_word_boundary(true)
                        .dfa_size_limit(Some(16 << 20))
                        .determinize_size_limit(Some(16 << 20)),
                )
                .build(pattern)
                .map_err(Box::new)
        };
        let dfa = build(false)
            .or_else(|_| build(true))
            .map_err(|e| refused(&e))?;
        let start = dfa
            .start_state(&start::Config::new().anchored(Anchored::No))
            .map_err(|e| refused(&e))?;
        Ok(Self { dfa, start })
    }

    /// The string is exactly `literal`, ignoring case.
    pub fn literal(literal: &str) -> Result<Self, Incomplete> {
        Self::regex(&format!("^{}$", regex::escape(literal)))
    }
}

/// Every combination of the predicates' truth values that a non-empty string over
/// [`ALPHABET`] reaches, with the shortest such string; `required[i]` fixes
/// predicate `i`'s value for every string considered (the shape an address must
/// have, domains that must not be ours). The combinations are the keys; the witnesses
/// the values.
pub fn atoms(
    preds: &[Pred],
    required: &[(Pred, bool)],
) -> Result<HashMap<Vec<bool>, String>, Incomplete> {
    let all: Vec<&Pred> = preds
        .iter()
        .chain(required.iter().map(|(p, _)| p))
        .collect();
    // One representative byte per class of bytes that every DFA treats alike.
    let mut reps: Vec<u8> = Vec::new();
    let mut seen_classes: Vec<Vec<u8>> = Vec::new();
    for &b in ALPHABET {
        let classes: Vec<u8> = all.iter().map(|p| p.dfa.byte_classes().get(b)).collect();
        if !seen_classes.contains(&classes) {
            seen_classes.push(classes);
            reps.push(b);
        }
    }
    // A product state: each DFA's state, or DONE once it has matched (what follows
    // cannot undo a match of an unanchored search).
    const DONE: u32 = u32::MAX;
    // The last component tells the empty string (0) from the others (1), which are
    // the only ones recorded: with no DFA at all, "a" is still a witness.
    let mut start: Vec<u32> = all.iter().map(|p| p.start.as_u32()).collect();
    start.push(0);
    let mut index: HashMap<Vec<u32>, usize> = HashMap::new();
    let mut nodes: Vec<(Vec<u32>, usize, u8)> = vec![(start.clone(), usize::MAX, 0)];
    index.insert(start, 0);
    let mut found: HashMap<Vec<bool>, String> = HashMap::new();
    let mut next = 0;
    while next < nodes.len() {
        let here = nodes[next].0.clone();
        let depth_witness = witness(&nodes, next);
        if !depth_witness.is_empty() {
            let values: Vec<bool> = all
                .iter()
                .zip(&here)
                .map(|(p, &s)| {
                    s == DONE
                        || p.dfa
                            .is_match_state(p.dfa.next_eoi_state(StateID::must(s as usize)))
                })
                .collect();
            let (free, fixed) = values.split_at(preds.len());
            if fixed.iter().zip(required).all(|(v, (_, want))| v == want) {
                found
                    .entry(free.to_vec())
                    .or_insert_with(|| String::from_utf8_lossy(&depth_witness).into_owned());
            }
        }
        if depth_witness.len() < MAX_LEN {
            for &b in &reps {
                let mut to: Vec<u32> = all
                    .iter()
                    .zip(&here)
                    .map(|(p, &s)| {
                        if s == DONE {
                            return DONE;
                        }
                        let n = p.dfa.next_state(StateID::must(s as usize), b);
                        if p.dfa.is_match_state(n) {
                            DONE
                        } else {
                            n.as_u32()
                        }
                    })
                    .collect();
                to.push(1);
                if !index.contains_key(&to) {
                    if nodes.len() >= MAX_STATES {
                        return Err(Incomplete::TooLarge);
                    }
                    index.insert(to.clone(), nodes.len());
                    nodes.push((to, next, b));
                }
            }
        } else if nodes[next].0[..all.len()].iter().any(|&s| s != DONE) {
            // a longer string might still change a value: the walk is not complete
            return Err(Incomplete::TooLarge);
        }
        next += 1;
    }
    Ok(found)
}

/// Whether `s` matches each of `preds` (what [`atoms`] keys its witnesses by).
pub fn values(preds: &[Pred], s: &str) -> Vec<bool> {
    preds
        .iter()
        .map(|p| {
            let mut state = p.start;
            for &b in s.as_bytes() {
                state = p.dfa.next_state(state, b);
                if p.dfa.is_match_state(state) {
                    return true;
                }
            }
            p.dfa.is_match_state(p.dfa.next_eoi_state(state))
        })
        .collect()
}

/// The string that reaches node `i` (bytes from the start).
fn witness(nodes: &[(Vec<u32>, usize, u8)], mut i: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while i != 0 {
        out.push(nodes[i].2);
        i = nodes[i].1;
    }
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> (Pred, bool) {
        (
            Pred::regex(r"^[^@]+@[a-z0-9-]+(\.[a-z0-9-]+)+$").unwrap(),
            true,
        )
    }

    #[test]
    fn every_combination_of_two_patterns_is_found_with_a_witness() {
        let preds = [
            Pred::regex("^postmaster@").unwrap(),
            Pred::regex(r"@example\.com$").unwrap(),
        ];
        let atoms = atoms(&preds, &[addr()]).unwrap();
        assert_eq!(atoms.len(), 4, "{atoms:?}");
        let re0 = regex::RegexBuilder::new("^postmaster@")
            .case_insensitive(true)
            .build()
            .unwrap();
        let re1 = regex::Regex::new(r"@example\.com$").unwrap();
        for (values, w) in &atoms {
            assert_eq!(values, &vec![re0.is_match(w), re1.is_match(w)], "{w}");
        }
    }

    #[test]
    fn values_agree_with_the_regex_crate() {
        let preds = [
            Pred::regex("^post").unwrap(),
            Pred::regex(r"x\.test$").unwrap(),
        ];
        assert_eq!(values(&preds, "postmaster@x.test"), [true, true]);
        assert_eq!(values(&preds, "Postmaster@X.TEST.org"), [true, false]);
        assert_eq!(values(&preds, "a@b"), [false, false]);
    }

    #[test]
    fn an_impossible_combination_is_absent() {
        // no address both is exactly a@b.c and ends in .org
        let preds = [
            Pred::literal("a@b.c").unwrap(),
            Pred::regex(r"\.org$").unwrap(),
        ];
        let atoms = atoms(&preds, &[addr()]).unwrap();
        assert!(!atoms.contains_key(&vec![true, true]), "{atoms:?}");
        assert_eq!(atoms[&vec![true, false]], "a@b.c");
        assert!(atoms.contains_key(&vec![false, true]));
        assert!(atoms.contains_key(&vec![false, false]));
    }

    #[test]
    fn a_required_negative_excludes_strings() {
        // every address ends in our domain: nothing else satisfies "not ours"
        let ours = (Pred::regex(r"@ours\.test$").unwrap(), false);
        let preds = [Pred::regex(r"\.test$").unwrap()];
        let atoms = atoms(&preds, &[addr(), ours]).unwrap();
        assert_eq!(atoms.len(), 2);
        assert!(!atoms[&vec![true]].ends_with("@ours.test"));
    }

    #[test]
    fn patterns_with_unicode_classes_and_boundaries_still_build() {
        let preds = [Pred::regex(r"\bspam\w+").unwrap()];
        let atoms = atoms(&preds, &[]).unwrap();
        assert_eq!(atoms.len(), 2);
        assert!(atoms[&vec![true]].starts_with("spam"));
    }
}
