//! The `greylisting` block and `greylist` rules.

use super::*;

/// docs/configuration.md's snippet, and what it sets.
#[test]
fn greylisting_block() {
    let docs = include_str!("../../../../docs/configuration.md");
    let from = docs.find("## `greylisting` (optional, once)").unwrap();
    let start = from + docs[from..].find("```kdl\n").unwrap() + "```kdl\n".len();
    let snippet = &docs[start..start + docs[start..].find("```").unwrap()];
    let config = parse(&format!(
        "{PRELUDE}networks \"trusted\" \"127.0.0.0/8\"\n{snippet}stage \"rcpt\" {{\n    greylist not-client=\"trusted\"\n    accept\n}}\n"
    ));
    let g = config.greylisting.clone().expect("the block");
    assert_eq!(g.delay, Duration::from_secs(300));
    assert_eq!(g.retry_window, Duration::from_secs(2 * 86400));
    assert_eq!(g.max_age, Duration::from_secs(35 * 86400));
    assert_eq!(
        (g.ipv4_prefix, g.ipv6_prefix, g.auto_allowlist),
        (24, 64, 5)
    );
    assert_eq!(g.allow_clients, ["trusted"]);
    assert_eq!(g.max_entries, 100_000);
    assert_eq!(
        g,
        crate::config::greylisting::Greylisting {
            allow_clients: vec!["trusted".into()],
            ..Default::default()
        },
        "the snippet writes the defaults"
    );
    assert_eq!(config.rules(Stage::Rcpt)[0].action, RuleAction::Greylist);
    let config = parse(&format!(
        "{PRELUDE}greylisting {{\n    delay \"2s\"\n    ipv4-prefix 32\n    auto-allowlist 0\n    text \"Come back in %s s\"\n}}\n"
    ));
    let g = config.greylisting.unwrap();
    assert_eq!(g.delay, Duration::from_secs(2));
    assert_eq!((g.ipv4_prefix, g.auto_allowlist), (32, 0));
    assert_eq!(g.text, "Come back in %s s");
    assert_eq!(parse(PRELUDE).greylisting, None);
}

#[test]
fn greylisting_errors_point_at_the_place() {
    for (rest, want) in [
        (
            "greylisting {\n    allow-clients \"nope\"\n}\n",
            "no networks set named `nope`",
        ),
        (
            "greylisting {\n    allow-recipients \"nope\"\n}\n",
            "no domains set named `nope`",
        ),
        ("greylisting {\n    delay \"2d\"\n}\n", "mtad.kdl:7:11"),
        ("greylisting {\n    ipv4-prefix 33\n}\n", "mtad.kdl:7:17"),
        ("greylisting {\n    text \"\"\n}\n", "mtad.kdl:7:10"),
        ("greylisting {\n    dealy \"5m\"\n}\n", "mtad.kdl:7:5"),
        ("greylisting {\n}\ngreylisting {\n}\n", "mtad.kdl:8:1"),
        (
            "stage \"mail\" {\n    greylist\n}\n",
            "`greylist` has no meaning in the mail stage",
        ),
        ("stage \"rcpt\" {\n    greylist \"x\"\n}\n", "mtad.kdl:7:"),
    ] {
        let (_, text) = check(&format!("{PRELUDE}{rest}"));
        assert!(text.contains(want), "{rest}\n{text}");
        let place = match rest {
            r if r.contains("allow-clients") => "mtad.kdl:7:19",
            r if r.contains("allow-recipients") => "mtad.kdl:7:22",
            r if r.starts_with("stage \"mail") => "mtad.kdl:7:5",
            _ => "mtad.kdl:",
        };
        assert!(text.contains(place), "{rest}\n{text}");
    }
}
