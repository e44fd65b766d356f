//! The parsers on ordinary and hostile input, the joining of restriction lists, SQL
//! `.cf` files, and the documentation's parameter table.

use super::kdl::Cond;
use super::maincf::{MainCf, Params, split_list};
use super::mastercf;
use super::restrictions::{Action, Item, List, Rule, join};
use super::tables::{Source, sql_table};

fn params(text: &str) -> Params {
    Params::new(&MainCf::parse(text).expect("main.cf"), "host.example.test")
}

#[test]
fn main_cf_lines_continuations_comments_and_repeats() {
    let cf = MainCf::parse(
        "# comment\nmydestination = a.example,\n    b.example\n# in between\n  c.example\n\nmyhostname=x\nmyhostname = y\n",
    )
    .unwrap();
    assert_eq!(
        cf.settings["mydestination"].value,
        "a.example, b.example c.example"
    );
    assert_eq!(cf.settings["mydestination"].line, 2);
    assert_eq!(cf.settings["myhostname"].value, "y", "the last one wins");
    assert_eq!(cf.repeated, [("myhostname".to_owned(), 8)]);
    let errors =
        MainCf::parse("good = 1\nthis line has no equals sign\n= empty name\n").unwrap_err();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0].line, 2);
}

#[test]
fn expansion_as_postfix_does_it() {
    let p = params(
        "myhostname = mx.$mydomain\nmydomain = example.test\na = ${mydomain}/$(mydomain)\n\
         set = x\nempty =\nq1 = ${set?yes}${empty?no}\nq2 = ${set:no}${empty:yes}\n\
         q3 = ${set?{A}:{B}} ${empty?{A}:{B}}\ndollar = $$5\nunknown = [$nosuchparameter]\n",
    );
    assert_eq!(p.get("myhostname").unwrap(), "mx.example.test");
    assert_eq!(p.get("a").unwrap(), "example.test/example.test");
    assert_eq!(p.get("q1").unwrap(), "yes");
    assert_eq!(p.get("q2").unwrap(), "yes");
    assert_eq!(p.get("q3").unwrap(), "A B");
    assert_eq!(p.get("dollar").unwrap(), "$5");
    assert_eq!(p.get("unknown").unwrap(), "[]");
    // the default of myorigin is $myhostname, of mydestination three names
    assert_eq!(p.get("myorigin").unwrap(), "mx.example.test");
    assert_eq!(
        p.list("mydestination").unwrap(),
        ["mx.example.test", "localhost.example.test", "localhost"]
    );
}

#[test]
fn defaults_follow_the_compatibility_level() {
    let old = params("mydestination = a.example\n");
    assert_eq!(
        old.get("relay_domains").unwrap(),
        "a.example",
        "level 0: $mydestination"
    );
    assert_eq!(old.get("smtpd_relay_restrictions").unwrap(), "");
    assert_eq!(old.get("mynetworks_style").unwrap(), "subnet");
    let new = params("compatibility_level = 3.6\nmydestination = a.example\n");
    assert_eq!(new.get("relay_domains").unwrap(), "");
    assert_eq!(
        new.get("smtpd_relay_restrictions").unwrap(),
        "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination"
    );
    assert_eq!(new.get("mynetworks_style").unwrap(), "host");
    assert_eq!(
        new.get("smtpd_relay_before_recipient_restrictions")
            .unwrap(),
        "yes"
    );
    let two = params("compatibility_level = 2\n");
    assert_eq!(
        two.get("smtpd_relay_before_recipient_restrictions")
            .unwrap(),
        "no"
    );
    assert_eq!(two.get("append_dot_mydomain").unwrap(), "no");
    // levels compare as numbers part by part: 3.10 is after 3.6
    assert_eq!(
        super::maincf::compare_levels("3.10", "3.6"),
        std::cmp::Ordering::Greater
    );
}

#[test]
fn expansion_loops_and_garbage_are_errors_not_panics() {
    let p = params("a = $b\nb = $a\nc = ${oops\nd = ${{x} ~~ {y} ? {1} : {2}}\ne = ${f?{x}:}\n");
    assert!(p.get("a").is_err(), "a loop");
    assert!(p.get("c").is_err(), "unbalanced");
    assert!(p.get("d").is_err(), "unknown operator");
    assert!(p.get("e").is_err(), "a malformed pair");
    // a value that doubles at each step is bounded
    let mut text = String::from("v0 = xxxxxxxxxxxxxxxx\n");
    for i in 1..40 {
        text.push_str(&format!("v{i} = $v{0}$v{0}\n", i - 1));
    }
    assert!(params(&text).get("v39").is_err());
}

#[test]
fn lists_split_at_commas_and_spaces_keeping_braces() {
    assert_eq!(
        split_list(
            "permit_mynetworks,reject_unauth_destination  check_policy_service { inet:127.0.0.1:10023, timeout=10s }"
        ),
        [
            "permit_mynetworks",
            "reject_unauth_destination",
            "check_policy_service",
            "inet:127.0.0.1:10023, timeout=10s"
        ]
    );
    assert_eq!(split_list(" , ,, "), Vec::<String>::new());
}

#[test]
fn master_cf_services_and_overrides() {
    let services = mastercf::parse(
        "# comment\nsmtp inet n - y - - smtpd\nsubmission inet n - y - - smtpd\n  -o syslog_name=postfix/submission\n  -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }\n  -osmtpd_tls_security_level=encrypt\namavis unix - - n - 2 smtp -v\n",
    )
    .unwrap();
    assert_eq!(services.len(), 3);
    assert_eq!(services[1].name, "submission");
    assert_eq!(
        services[1].overrides,
        [
            ("syslog_name".to_owned(), "postfix/submission".to_owned()),
            (
                "smtpd_client_restrictions".to_owned(),
                "permit_sasl_authenticated, reject".to_owned()
            ),
            ("smtpd_tls_security_level".to_owned(), "encrypt".to_owned()),
        ]
    );
    assert_eq!(services[2].args, ["-v"]);
    let errors = mastercf::parse("smtp inet n -\nx bogus n - n - - smtpd\ny inet n - n - - smtpd -o\nz inet n - n - - smtpd -o { a=b\n").unwrap_err();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert_eq!(mastercf::port("submission"), Some(587));
    assert_eq!(mastercf::port("10025"), Some(10025));
    assert_eq!(mastercf::port("nosuchservice"), None);
}

fn permit(c: Cond) -> Item {
    Item::Permit {
        conds: vec![c],
        comment: "permit".into(),
    }
}

fn reject(conds: Vec<Cond>) -> Item {
    Item::Decide {
        rule: Rule::new(
            Action::Reject {
                code: 554,
                enhanced: "5.7.1".into(),
                text: "no".into(),
            },
            conds,
            "reject",
        ),
        may_permit: false,
    }
}

#[test]
fn a_permit_in_an_earlier_list_guards_the_rest_of_that_list_only() {
    let lists = [
        List {
            parameter: "smtpd_relay_restrictions".into(),
            items: vec![
                permit(Cond::s("client", "mynetworks")),
                reject(vec![Cond::s("rcpt-domain", "destinations").negate()]),
            ],
        },
        List {
            parameter: "smtpd_recipient_restrictions".into(),
            items: vec![
                reject(vec![Cond::s("sender", "bad@x.example")]),
                permit(Cond::b("authenticated", true)),
            ],
        },
    ];
    let mut problems = Vec::new();
    let rules: Vec<String> = join(&lists, &[], true, &mut problems)
        .iter()
        .map(Rule::render)
        .collect();
    assert!(problems.is_empty());
    assert_eq!(
        rules,
        [
            "reject 554 \"5.7.1\" \"no\" not-client=\"mynetworks\" not-rcpt-domain=\"destinations\"",
            "reject 554 \"5.7.1\" \"no\" sender=\"bad@x.example\"",
            "accept authenticated=#true",
            "accept",
        ]
    );
}

#[test]
fn pattern_permits_and_exclusions_merge_into_one_condition() {
    // two pattern permits in an earlier list guard the rest of it together, and a
    // rule's own exclusion joins them: neither pattern may match
    let lists = [
        List {
            parameter: "smtpd_sender_restrictions".into(),
            items: vec![
                permit(Cond::s("sender-matches", "^a@")),
                permit(Cond::s("sender-matches", "^b@")),
                reject(vec![
                    Cond::s("sender-matches", "@x$"),
                    Cond::s("sender-matches", "^c@").negate(),
                ]),
            ],
        },
        List {
            parameter: "smtpd_relay_restrictions".into(),
            items: vec![reject(vec![
                Cond::s("rcpt-domain", "destinations").negate(),
            ])],
        },
    ];
    let mut problems = Vec::new();
    let rules: Vec<String> = join(&lists, &[], true, &mut problems)
        .iter()
        .map(Rule::render)
        .collect();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        rules[0],
        "reject 554 \"5.7.1\" \"no\" not-sender-matches=\"(?:(?:^a@)|(?:^b@))|(?:^c@)\" sender-matches=\"@x$\""
    );
    // a positive pattern is never merged: that would need both to match
    assert_eq!(
        Cond::s("sender-matches", "a").merge_negated(&Cond::s("sender-matches", "b")),
        None
    );
    assert_eq!(
        Cond::s("client", "a")
            .negate()
            .merge_negated(&Cond::s("client", "b").negate()),
        None
    );
}

#[test]
fn what_cannot_be_joined_defers_where_it_stood() {
    // two permits on the client in an earlier list: not expressible with one property
    let lists = [
        List {
            parameter: "smtpd_client_restrictions".into(),
            items: vec![
                permit(Cond::s("client", "a")),
                permit(Cond::s("client", "b")),
                reject(vec![]),
            ],
        },
        List {
            parameter: "smtpd_relay_restrictions".into(),
            items: vec![reject(vec![
                Cond::s("rcpt-domain", "destinations").negate(),
            ])],
        },
    ];
    let mut problems = Vec::new();
    let rules = join(&lists, &[], true, &mut problems);
    assert_eq!(problems.len(), 1);
    assert!(
        matches!(rules[0].action, Action::Unsupported(_)),
        "{rules:?}"
    );
    assert_eq!(rules[0].conds, [Cond::s("client", "a").negate()]);
    // and nothing of that list after it is dropped silently: the defer comes first
    assert!(
        rules
            .iter()
            .all(|r| r.action != Action::Accept || r.conds.is_empty())
    );
}

#[test]
fn sql_cf_files_become_sql_tables() {
    let src = Source {
        dir: std::env::temp_dir(),
        config_directory: "/etc/postfix".into(),
        from_host: Default::default(),
    };
    // seed 002's file, as written
    let t = sql_table(
        "mysql",
        "user = postfix-mysql-user\npassword = postfix-mysql-pass\nhosts = localhost\ndbname = postfix-user-db\ntable = domain\nselect_field = domain\nwhere_field = domain\nadditional_conditions = and backupmx = '0' and active = '1'\n",
        &src,
    )
    .unwrap();
    assert_eq!(
        t.url,
        "mysql://postfix-mysql-user:postfix-mysql-pass@localhost/postfix-user-db"
    );
    assert_eq!(
        t.query,
        "SELECT domain FROM domain WHERE domain = ? and backupmx = '0' and active = '1'"
    );
    let t = sql_table(
        "pgsql",
        "hosts = unix:/run/postgresql/.s.PGSQL.5432\nuser = pf\ndbname = mail\nquery = SELECT goto FROM alias WHERE address='%s' OR address='%s'\n",
        &src,
    )
    .unwrap();
    assert_eq!(t.url, "postgres://pf@localhost/mail?host=/run/postgresql");
    assert_eq!(
        t.query,
        "SELECT goto FROM alias WHERE address=$1 OR address=$1"
    );
    for (cf, why) in [
        (
            "hosts = db.example\ndbname = x\nquery = SELECT a FROM b WHERE c='%s'\n",
            "only talks to databases on this host",
        ),
        (
            "dbname = x\nquery = SELECT a FROM b WHERE c='%u'\n",
            "only %s",
        ),
        (
            "dbname = x\nquery = SELECT a FROM b\n",
            "does not use the key",
        ),
        (
            "dbname = x\nquery = SELECT a FROM b WHERE c='%s'\nresult_format = %d@x\n",
            "result_format",
        ),
        (
            "dbname = x\nquery = SELECT a FROM b WHERE c='%s' OR d='%s'\n",
            "once",
        ),
    ] {
        let e = sql_table("mysql", cf, &src).unwrap_err();
        assert!(e.contains(why), "{cf}: {e}");
    }
}

/// Bytes a hostile main.cf or master.cf may hold: none panics, each answers.
#[test]
fn hostile_files_never_panic() {
    let pieces = [
        "",
        "=",
        "$",
        "${",
        "$(",
        "}",
        ")",
        "{",
        "${a?{",
        "${{",
        "${{a}<level{b}?{c}:{d}}",
        "\u{0}",
        "é",
        "\t",
        "\n",
        " ",
        "-o",
        "#",
        "a=$a",
        "b=${b:$b}",
        "inet",
        "smtpd",
        "unix",
        ",",
        ":",
        "${x?{y}:{z}}",
        "$$",
        "-o{",
        "{ a = b }",
        "0.0.0.0:25",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..3000 {
        let mut text = String::new();
        for _ in 0..(seed % 24) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            text.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            if seed.is_multiple_of(5) {
                text.push('\n');
            }
        }
        super::fuzz_conf(text.as_bytes());
        // and the whole import of it, as main.cf and as master.cf, every 10th time
        if seed.is_multiple_of(10) {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("main.cf"), &text).unwrap();
            std::fs::write(dir.path().join("master.cf"), &text).unwrap();
            let options = super::Options {
                hostname: Some("host.example".into()),
                spool: "spool".into(),
            };
            if let Ok(imported) = super::import(dir.path(), &options) {
                assert!(imported.config.contains("listen "));
            }
        }
    }
}

#[test]
fn the_documentation_table_is_the_mapping() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/migrating-from-postfix.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (start, end) = ("<!-- mapping: begin -->\n", "<!-- mapping: end -->");
    let (before, rest) = doc.split_once(start).expect("the begin marker");
    let (table, after) = rest.split_once(end).expect("the end marker");
    let wanted = super::mapping::markdown();
    if std::env::var_os("MTAD_BLESS").is_some() {
        std::fs::write(&path, format!("{before}{start}{wanted}{end}{after}")).unwrap();
        return;
    }
    assert_eq!(
        table, wanted,
        "docs/migrating-from-postfix.md's table is not the importer's mapping: \
         MTAD_BLESS=1 cargo test --lib the_documentation_table_is_the_mapping"
    );
}
