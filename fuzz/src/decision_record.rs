//! A decision log line (src/policy/decision_log.rs), as `mtactl replay` reads it from a
//! file that may hold anything: parsed as a `Record`, evaluated again against the
//! policy of `fuzz/data/mtad.kdl` with its answers given back (`Record::replay`, no
//! network; the recorded milters' answers too), and turned into a suite case
//! (`Record::suite_case`). Properties: a record writes back to itself; the replay does
//! not panic (the pipeline's guard would turn a panic into a 451 saying so), and a
//! refusal is a 4xx/5xx reply of printable text (a milter's, of its code's class); a
//! suite case is a KDL document whose one `case` the suite reader takes.

use std::sync::OnceLock;

use mtad::policy::Pipeline;
use mtad::policy::decision_log::Record;
use mtad::policy::{Verdict, decision_log::verdict_reply};

fn policy() -> &'static Pipeline {
    static POLICY: OnceLock<Pipeline> = OnceLock::new();
    POLICY.get_or_init(|| {
        let path = crate::data_dir().join("mtad.kdl");
        match Pipeline::load(&path) {
            Ok((_, pipeline)) => pipeline,
            Err(e) => panic!(
                "fuzz/data/mtad.kdl does not load:\n{}",
                mtad::config::render(&e)
            ),
        }
    })
}

pub fn run(data: &[u8]) {
    let Ok(record) = serde_json::from_slice::<Record>(data) else {
        return;
    };
    let text = serde_json::to_string(&record).expect("a record serializes");
    let again: Record = serde_json::from_str(&text).expect("a record reads back");
    assert_eq!(again, record, "{text}");
    if let Some(replayed) = record.replay(policy()) {
        assert!(
            !replayed
                .error
                .as_deref()
                .is_some_and(|e| e.contains("panicked")),
            "{:?}",
            replayed.error
        );
        if let Verdict::Reject(r) | Verdict::Defer(r) = &replayed.verdict {
            assert!((400..600).contains(&r.code), "{r:?}");
            assert!(r.text.bytes().all(|b| (0x20..0x7f).contains(&b)), "{r:?}");
            if replayed.rule.as_deref().is_some_and(|m| m.starts_with("milter:")) {
                // a milter's reply, read from the record: of its code's class
                assert_eq!(u16::from(r.enhanced[0]), r.code / 100, "{r:?}");
            }
        }
        let _ = verdict_reply(&replayed.verdict);
    }
    if let Some(case) = record.suite_case() {
        let doc: kdl::KdlDocument = case
            .parse()
            .unwrap_or_else(|e| panic!("not KDL: {e:?}\n{case}"));
        assert_eq!(doc.nodes().len(), 1, "{case}");
        assert_eq!(doc.nodes()[0].name().value(), "case", "{case}");
    }
}
