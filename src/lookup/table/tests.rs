use super::*;

fn map(text: &str) -> Table {
    parse_map(text).unwrap_or_else(|e| panic!("{e:?}"))
}

fn regexp(text: &str) -> Table {
    parse_regexp(text).unwrap_or_else(|e| panic!("{e:?}"))
}

fn cidr(text: &str) -> Table {
    parse_cidr(text).unwrap_or_else(|e| panic!("{e:?}"))
}

fn get(t: &Table, key: &str) -> Option<String> {
    t.lookup(key).unwrap().map(|v| v.into_owned())
}

/// The (line, column) of each error.
fn places(errors: &[TableError]) -> Vec<(u32, u32)> {
    errors.iter().map(|e| (e.line, e.column)).collect()
}

// ---- map ----

#[test]
fn map_reads_keys_values_comments_and_continuations() {
    let t = map(
        "# transport\n\nexample.local  smtp:[192.168.1.100]\n  # indented comment\n.example.local\tsmtp:[mailtrans.example.local]\nlong   first\n   second  \n",
    );
    assert_eq!(t.kind(), TableKind::Map);
    assert_eq!(t.len(), 3);
    assert_eq!(get(&t, "example.local").unwrap(), "smtp:[192.168.1.100]");
    assert_eq!(
        get(&t, ".example.local").unwrap(),
        "smtp:[mailtrans.example.local]"
    );
    assert_eq!(get(&t, "long").unwrap(), "first   second");
    assert_eq!(get(&t, "sub.example.local"), None);
    assert_eq!(t.lookup_with_line("long").unwrap().1, 6);
}

/// `postmap -q KEY texthash:FILE` and `hash:` (Postfix 3.7) give these answers;
/// tests/postfix_tables.rs compares with postmap itself.
#[test]
fn map_quoted_keys_are_one_key() {
    let t = map(
        "\"john doe\"@example.com  REJECT quoted\n\"a b\" plain\n\"x\\\" y\"@e.com  ESC\na\"b c\"d  MID\n",
    );
    assert_eq!(
        get(&t, "\"john doe\"@example.com").unwrap(),
        "REJECT quoted"
    );
    assert_eq!(
        get(&t, "\"JOHN DOE\"@example.com").unwrap(),
        "REJECT quoted"
    );
    assert_eq!(get(&t, "john doe@example.com"), None);
    assert_eq!(get(&t, "\"john"), None);
    assert_eq!(get(&t, "\"a b\"").unwrap(), "plain");
    assert_eq!(get(&t, "\"x\\\" y\"@e.com").unwrap(), "ESC");
    assert_eq!(get(&t, "a\"b c\"d").unwrap(), "MID");
    let e = parse_map("ok 1\n\"unterminated@x.com  V\n").unwrap_err();
    assert_eq!(places(&e), vec![(2, 1)]);
    assert!(e[0].message.contains("unbalanced"), "{e:?}");
}

#[test]
fn map_folds_key_case() {
    let t = map("Example.LOCAL OK\r\nÉcole.test Yes\n");
    assert_eq!(get(&t, "example.local").unwrap(), "OK");
    assert_eq!(get(&t, "EXAMPLE.local").unwrap(), "OK");
    assert_eq!(get(&t, "école.TEST").unwrap(), "Yes");
    // values keep their case
    assert_eq!(get(&t, "ÉCOLE.test").unwrap(), "Yes");
}

#[test]
fn map_keeps_the_first_of_duplicate_keys_with_a_warning() {
    let t = map("a first\nb x\nA second\n");
    assert_eq!(get(&t, "a").unwrap(), "first");
    assert_eq!(t.warnings().len(), 1);
    assert_eq!((t.warnings()[0].line, t.warnings()[0].column), (3, 1));
    assert!(
        t.warnings()[0].message.contains("line 1"),
        "{:?}",
        t.warnings()
    );
}

#[test]
fn map_key_without_value_is_an_error_with_its_place() {
    let e = parse_map("ok value\nlonely\n  \nfine x\nalone   \n").unwrap_err();
    assert_eq!(places(&e), vec![(2, 1), (5, 1)]);
    assert_eq!(e[0].byte_span, 9..15);
    assert!(e[0].message.contains("lonely"));
}

#[test]
fn inline_map_folds_case_and_keeps_first() {
    let t = inline_map(vec![
        ("Example.Local".into(), "smtp:[a]".into()),
        ("example.local".into(), "smtp:[b]".into()),
    ]);
    assert_eq!(t.len(), 1);
    assert_eq!(get(&t, "EXAMPLE.local").unwrap(), "smtp:[a]");
    assert!(!t.is_empty());
}

// ---- regexp ----

#[test]
fn regexp_first_match_in_file_order_wins() {
    let t =
        regexp("/^Subject:.*viagra/ REJECT spam\n/^Subject:/ WARN subject\n/^Received:/ IGNORE\n");
    assert_eq!(t.kind(), TableKind::Regexp);
    assert_eq!(t.len(), 3);
    assert_eq!(get(&t, "Subject: buy viagra").unwrap(), "REJECT spam");
    assert_eq!(get(&t, "Subject: hello").unwrap(), "WARN subject");
    assert_eq!(
        t.lookup_with_line("Received: from x").unwrap(),
        ("IGNORE".into(), 3)
    );
    assert_eq!(get(&t, "From: a@b"), None);
}

#[test]
fn regexp_is_case_insensitive_by_default_and_i_toggles_it() {
    let t = regexp("/^received:/ IGNORE\n/^X-Exact:/i EXACT\n");
    assert_eq!(get(&t, "RECEIVED: from x").unwrap(), "IGNORE");
    assert_eq!(get(&t, "X-Exact: 1").unwrap(), "EXACT");
    assert_eq!(get(&t, "x-exact: 1"), None);
}

#[test]
fn regexp_multiline_and_dot_newline_flags() {
    // without m, `.` matches a newline and ^ only the start
    let t = regexp("/^a.b$/ one\n/^second$/m two\n");
    assert_eq!(get(&t, "a\nb").unwrap(), "one");
    assert_eq!(get(&t, "first\nsecond\nthird").unwrap(), "two");
    let t = regexp("/^a.b$/m one\n");
    assert_eq!(get(&t, "a\nb"), None);
}

#[test]
fn regexp_x_toggles_basic_syntax() {
    let t = regexp("/^\\(ab\\)*c$/x OK $1\n/a|b/x LITERAL\n");
    assert_eq!(get(&t, "ababc").unwrap(), "OK ab");
    assert_eq!(get(&t, "a|b").unwrap(), "LITERAL");
    assert_eq!(get(&t, "a"), None);
}

#[test]
fn regexp_negation() {
    let t = regexp("!/@example\\.test$/ REJECT foreign\n/./ OK\n");
    assert_eq!(get(&t, "a@other.test").unwrap(), "REJECT foreign");
    assert_eq!(get(&t, "a@example.test").unwrap(), "OK");
    let t = regexp("! /x/ NOT-X\n");
    assert_eq!(get(&t, "abc").unwrap(), "NOT-X");
}

#[test]
fn regexp_substitutes_groups() {
    let t = regexp("/^(.*)@(.*)\\.old$/ ${1}-at-$2.new costs $$5\n/^(x)(y)?$/ [$2]\n");
    assert_eq!(
        get(&t, "joe@example.old").unwrap(),
        "joe-at-example.new costs $5"
    );
    // an unmatched optional group is empty
    assert_eq!(get(&t, "x").unwrap(), "[]");
    assert_eq!(get(&t, "xy").unwrap(), "[y]");
}

#[test]
fn regexp_if_endif_nests() {
    let t = regexp(
        "if /^Subject:/\n/free/ REJECT free\nif !/urgent/\n/money/ REJECT money\nendif\n/./ OK subject\nENDIF\n/money/ MONEY elsewhere\n",
    );
    assert_eq!(get(&t, "Subject: free stuff").unwrap(), "REJECT free");
    assert_eq!(get(&t, "Subject: money").unwrap(), "REJECT money");
    assert_eq!(get(&t, "Subject: urgent money").unwrap(), "OK subject");
    assert_eq!(get(&t, "From: money").unwrap(), "MONEY elsewhere");
    assert_eq!(get(&t, "From: nothing"), None);
    assert_eq!(t.len(), 4);
}

#[test]
fn regexp_other_delimiters_continuations_and_escapes() {
    let t = regexp("#c\n|^a/b\\|c| SLASH\n/^long/ part one\n  part two\n/a\\/b/ ESCAPED\n");
    assert_eq!(get(&t, "a/b|c").unwrap(), "SLASH");
    assert_eq!(get(&t, "longer").unwrap(), "part one  part two");
    assert_eq!(get(&t, "xa/b").unwrap(), "ESCAPED");
}

#[test]
fn regexp_errors_point_at_line_and_column() {
    let text = "/ok/ OK\n/(unclosed/ R\n/x/q R\n/no-result/\n/x/ $3\n!/(a)/ $1\n/unterminated R\nendif\nif /a/\n";
    let e = parse_regexp(text).unwrap_err();
    let got = places(&e);
    assert_eq!(
        got,
        vec![
            (2, 2),
            (3, 4),
            (4, 1),
            (5, 5),
            (6, 8),
            (7, 1),
            (8, 1),
            (9, 1)
        ],
        "{e:#?}"
    );
    assert!(
        e[0].message.starts_with("invalid regular expression"),
        "{}",
        e[0].message
    );
    assert!(e[1].message.contains("flag `q`"));
    assert!(e[3].message.contains("out of range"));
    assert!(e[4].message.contains("negated"));
    assert!(e[6].message.contains("without `if`"));
    assert!(e[7].message.contains("without `endif`"));
    // the span is the offending text
    assert_eq!(&text[e[1].byte_span.clone()], "q");
}

#[test]
fn regexp_without_the_set_gives_the_same_answers() {
    let text = "if /^Subject:/\n!/hello/ NOT-HELLO\nendif\n/(h)ello/ H=$1\nif !/a/\n/b/ B\nendif\n!/c/ NOT-C\n";
    let with = regexp(text);
    let mut without = regexp(text);
    if let Inner::Regexp(r) = &mut without.inner {
        r.set = None;
    }
    for key in [
        "Subject: hello",
        "Subject: bye",
        "hello",
        "nothing",
        "zzz",
        "b",
        "ab",
        "c",
    ] {
        assert_eq!(get(&with, key), get(&without, key), "{key}");
    }
    // nothing matches: the first negated rule outside failed `if`s answers
    assert_eq!(get(&with, "zzz").unwrap(), "NOT-C");
    assert_eq!(get(&with, "c"), None);
    assert_eq!(get(&with, "Subject: bye").unwrap(), "NOT-HELLO");
    assert_eq!(get(&with, "Hello").unwrap(), "H=H");
}

// ---- cidr ----

#[test]
fn cidr_first_match_v4_and_v6() {
    let t = cidr(
        "# clients\n192.0.2.0/24 REJECT\n192.0.2.7 OK too late\n2001:db8::/32 OK v6\n[2001:db9::1] OK bracket\n0.0.0.0/0 DUNNO\n",
    );
    assert_eq!(t.kind(), TableKind::Cidr);
    assert_eq!(t.len(), 5);
    assert_eq!(get(&t, "192.0.2.7").unwrap(), "REJECT");
    assert_eq!(t.lookup_with_line("192.0.2.7").unwrap().1, 2);
    assert_eq!(get(&t, "2001:db8::5").unwrap(), "OK v6");
    assert_eq!(get(&t, "2001:db9::1").unwrap(), "OK bracket");
    assert_eq!(get(&t, "10.1.2.3").unwrap(), "DUNNO");
    assert_eq!(get(&t, "::ffff:10.1.2.3").unwrap(), "DUNNO");
    assert_eq!(get(&t, "2001:dba::1"), None);
    assert_eq!(get(&t, "not-an-ip"), None);
}

#[test]
fn cidr_negation_and_if() {
    let t = cidr("if 10.0.0.0/8\n!10.1.0.0/16 INNER-NOT\nendif\n! 192.0.2.0/24 OUTSIDE\n");
    assert_eq!(get(&t, "10.2.0.1").unwrap(), "INNER-NOT");
    assert_eq!(get(&t, "10.1.0.1").unwrap(), "OUTSIDE");
    assert_eq!(get(&t, "192.0.2.1"), None);
    // results are literal: no `$` substitution in CIDR tables
    let t = cidr("127.0.0.1 costs $5\n");
    assert_eq!(get(&t, "127.0.0.1").unwrap(), "costs $5");
}

#[test]
fn cidr_errors_point_at_line_and_column() {
    let e = parse_cidr("10.0.0.1/8 X\n10.0.0.0/8\n  continued\n300.1.1.1 X\n! \n").unwrap_err();
    assert_eq!(places(&e), vec![(1, 1), (4, 1), (5, 1)], "{e:#?}");
    assert_eq!(e[0].help.as_deref(), Some("did you mean `10.0.0.0/8`?"));
    // a continued line is one logical line: the result `continued` is found
    let t = cidr("10.0.0.0/8\n  continued\n");
    assert_eq!(get(&t, "10.0.0.1").unwrap(), "continued");
}

// ---- non-ASCII text (Postfix matches bytes, as in the C locale) ----

/// Compared with `postmap -q KEY regexp:FILE` (Postfix 3.7): the answers of the
/// `postfix_agrees_on_non_ascii_patterns` test in tests/lookup.rs.
#[test]
fn regexp_non_ascii_patterns_match_bytes() {
    let t = regexp("/テスト/ REJECT jp\n/^.$/ ONE\n/^..$/ TWO\n/É/ UPPER\n/[ü]/ CLASS\n");
    assert_eq!(get(&t, "これはテストです").unwrap(), "REJECT jp");
    assert_eq!(get(&t, "a").unwrap(), "ONE");
    // `.` is one byte: é is two
    assert_eq!(get(&t, "é").unwrap(), "TWO");
    // case folding is ASCII only: É does not match é (which matches [ü] by its \xC3)
    assert_eq!(get(&t, "xéx").unwrap(), "CLASS");
    assert_eq!(get(&t, "xÉx").unwrap(), "UPPER");
    // a bracket expression holds bytes: [ü] is \xC3 or \xBC, so ö (\xC3\xB6) matches
    assert_eq!(get(&t, "xxüxx").unwrap(), "CLASS");
    assert_eq!(get(&t, "xxöxx").unwrap(), "CLASS");
    // a backslash before a non-ASCII character quotes it
    let t = regexp("/a\\é/ QUOTED\n");
    assert_eq!(get(&t, "aé").unwrap(), "QUOTED");
    // a non-ASCII delimiter: Postfix skips the rule ("unknown regexp option"), mtad
    // refuses it where it is
    let e = parse_regexp("/x/ X\néabcé X\n").unwrap_err();
    assert_eq!(places(&e), vec![(2, 1)], "{e:#?}");
}

#[test]
fn tables_with_non_ascii_never_panic() {
    for text in [
        "/テスト/ REJECT\n",
        "/é/ X\n",
        "é\n",
        "if /テ/\n/ス/ X\nendif\n",
        "ifé /x/ X\n",
        "iéf X\n",
        "テ X\n",
        "! é\n",
        "/a/é X\n",
        "/a/ $é\n",
        "/a/ ${é}\n",
        "/(a)/ $1é\n",
        "\u{80}\n",
        "i\u{301} X\n",
    ] {
        let _ = parse_regexp(text);
        let _ = parse_cidr(text);
        let _ = parse_map(text);
        let _ = crate::lookup::parse_aliases(text);
    }
}

/// Table texts made of the pieces parsers treat specially, ASCII or not: no panic.
#[test]
fn random_tables_never_panic() {
    const PIECES: &[&str] = &[
        "/",
        "!",
        "if",
        "endif",
        " ",
        "\t",
        "\n",
        "\r\n",
        "#",
        "$",
        "${",
        "$(",
        "}",
        ")",
        "1",
        "é",
        "テ",
        "\"",
        "\\",
        "[",
        "]",
        "(",
        "i",
        "m",
        "x",
        ":",
        ",",
        "a",
        "10.0.0.0/8",
        "::1",
        "\u{301}",
        "REJECT",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..20_000 {
        let len = next() % 24;
        let text: String = (0..len)
            .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
            .collect();
        if let Ok(t) = parse_regexp(&text) {
            let _ = t.lookup(&text);
        }
        let _ = parse_cidr(&text);
        if let Ok(t) = parse_map(&text) {
            let _ = t.lookup(&text);
        }
        if let Ok(t) = crate::lookup::parse_aliases(&text) {
            let _ = t.lookup("a");
        }
        let _: Vec<&str> = crate::lookup::split_addresses(&text).collect();
        let (h, _) = crate::message::parse_headers(text.as_bytes());
        for h in &h {
            let _ = (h.name(), h.value(), h.unfolded());
        }
    }
}
