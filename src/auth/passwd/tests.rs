//! Every vector here was made by a real tool, with the password `correct horse`:
//! `doveadm pw -s SCHEME` (Dovecot 2.3.19, its default costs unless `-r` is shown),
//! `mkpasswd -m METHOD` (whois 5.5.17) and `htpasswd -bnBC 10` (Apache 2.4).

use super::*;

const PASSWORD: &[u8] = b"correct horse";

/// (how it was made, the stored password)
const VECTORS: &[(&str, &str)] = &[
    (
        "doveadm pw -s ARGON2ID",
        "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$Bf6+QdtUMNazEruSRB2NRA$hq1kmswDZ5k+lwIDHN9Gj4lu+oe8qpcIhPifjaIOZmo",
    ),
    (
        "doveadm pw -s ARGON2I",
        "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$W3oG6tLIU7II2kWOqjQq1A$ijtFJaa79yQMi3iYbQ+UXJd9O/qRVXp4EZHbJ1yO/F0",
    ),
    (
        "doveadm pw -s BLF-CRYPT",
        "{BLF-CRYPT}$2y$05$niZ17LWc.DgJyQ.C7MOKrOB0zSfdWXGPb/TnerGEv2r.odMbrgE2G",
    ),
    (
        "doveadm pw -s BLF-CRYPT -r 10",
        "{BLF-CRYPT}$2y$10$8U9W.4FWnV0lWw5W1q4Ccu8XRaWWknbKLEbpGlUkv2Ht4Blo8SfsK",
    ),
    (
        "htpasswd -bnBC 10",
        "{BLF-CRYPT}$2y$10$T2LXcypaowPJ3E5onOVMUOfvBkqKcKlXmvnSuw.MqZHjLAg9P1sy2",
    ),
    (
        "mkpasswd -m bcrypt",
        "{BLF-CRYPT}$2b$05$/5MeZPA.nXragd2sHlYd9eJiWoQXBUs88/MKWJbyKcm5Xlt0CEDWS",
    ),
    (
        "mkpasswd -m bcrypt-a",
        "{blf-crypt}$2a$05$vL95MdmczGGJqXjVQNY1HONu1hAt0syfdcbFdGTSFkrgz8Z4PCxRW",
    ),
    (
        "doveadm pw -s SHA512-CRYPT",
        "{SHA512-CRYPT}$6$FfOE6H40MUGd4Zoo$7zDNdbltHQuSFcWZzxeTo1xgV.SoeT7CKP3ADg.0mD5.Ld5jzza2SZ4fFsifw2S1FzL/jS9/KLo4UVS0dLT2y0",
    ),
    (
        "doveadm pw -s SHA512-CRYPT -r 10000",
        "{SHA512-CRYPT}$6$rounds=10000$/wRAsqzVdRMzsarO$R5/iTZJ4d9VuFDP2BuMOxgTZZW18c1ts2numSG4lcfkGhvur9S.5ZtNSqxv7g0Z1bZiuyD31eW5.u9Bry2E.t/",
    ),
    (
        "mkpasswd -m sha512crypt -R 6000",
        "{SHA512-CRYPT}$6$rounds=6000$gDEfwJm8xcmbqeZw$39L5OkPIgDyrihfjQ9qMnl0wpd03G/O2B45wdqc5J8kcip02DINxaV41J8LDHGVUeijFe945HJlwPjtmm.20e.",
    ),
    (
        "mkpasswd -m sha-512",
        "{SHA512-CRYPT}$6$U3WhHMKnLR2Mf70b$DBtGy3EPBE7ecJufptmqqbbQVykRwDreYmMnpfCEwifEBokor6rxkHHLgdwbDz9PZZkYEV9MNeq9GYEaO4B3F0",
    ),
    (
        "doveadm pw -s SHA256-CRYPT",
        "{SHA256-CRYPT}$5$8xe.OWTH2M7gY2Kw$JUJtcmd2xlK7ngGV07/B.hiuIVqLVydRxUcQ8mBwcmC",
    ),
    (
        "mkpasswd -m sha-256",
        "{SHA256-CRYPT}$5$pYy0O7Wz./IAkR5K$CLLB2BjNnJtQwSF.2RzWNHjBt1y3VL3Dem4U4x1zAd4",
    ),
    ("doveadm pw -s PLAIN", "{PLAIN}correct horse"),
    ("doveadm pw -s CLEAR", "{CLEAR}correct horse"),
];

#[test]
fn every_scheme_verifies_tool_made_hashes() {
    for (tool, stored) in VECTORS {
        let parsed = StoredPassword::parse(stored).unwrap_or_else(|e| panic!("{tool}: {e:?}"));
        assert!(parsed.verify(PASSWORD), "{tool}: right password refused");
        assert!(
            !parsed.verify(b"correct horsf"),
            "{tool}: wrong password taken"
        );
        assert!(!parsed.verify(b""), "{tool}: empty password taken");
    }
}

#[test]
fn schemes_are_recognised() {
    let schemes: Vec<Scheme> = VECTORS
        .iter()
        .map(|(_, s)| StoredPassword::parse(s).unwrap().scheme())
        .collect();
    use Scheme::*;
    assert_eq!(
        schemes,
        [
            Argon2id,
            Argon2i,
            BlfCrypt,
            BlfCrypt,
            BlfCrypt,
            BlfCrypt,
            BlfCrypt,
            Sha512Crypt,
            Sha512Crypt,
            Sha512Crypt,
            Sha512Crypt,
            Sha256Crypt,
            Sha256Crypt,
            Plain,
            Plain
        ]
    );
}

#[test]
fn plain_passwords_may_hold_braces_and_dollars() {
    let p = StoredPassword::parse("{PLAIN}{x}$6$").unwrap();
    assert!(p.verify(b"{x}$6$"));
    assert!(!p.verify(b"{x}$6"));
}

#[test]
fn debug_hides_the_hash() {
    let p = StoredPassword::parse("{PLAIN}correct horse").unwrap();
    assert_eq!(format!("{p:?}"), "StoredPassword({PLAIN}..)");
}

/// `(byte span, message fragment)` of what `parse` says about `text`.
fn refused(text: &str) -> (Range<usize>, String, Option<String>) {
    let e = StoredPassword::parse(text).expect_err(text);
    (e.span, e.message, e.help)
}

#[test]
fn malformed_hashes_are_refused_at_the_hash() {
    let argon = "$argon2id$v=19$m=65536,t=3,p=1$Bf6+QdtUMNazEruSRB2NRA$hq1kmswDZ5k+lwIDHN9Gj4lu+oe8qpcIhPifjaIOZmo";
    for (text, span, why) in [
        (
            "{MD5-CRYPT}$1$x$y",
            1..10,
            "unknown password scheme `MD5-CRYPT`",
        ),
        ("{ARGON2ID", 0..1, "without a closing"),
        ("{SHA512-CRYPT}", 1..13, "empty {SHA512-CRYPT} password"),
        ("{PLAIN}", 1..6, "empty {PLAIN} password"),
        (
            &format!("{{ARGON2I}}{argon}"),
            9..106,
            "needs a `$argon2i$` hash",
        ),
        (
            "{ARGON2ID}$argon2id$v=19$m=65536",
            10..32,
            "without salt or output",
        ),
        ("{ARGON2ID}argon2id=19", 10..21, "not an Argon2 PHC string"),
        (
            "{ARGON2ID}$argon2id$v=19$m=4194304,t=3,p=1$Bf6+QdtUMNazEruSRB2NRA$hq1kmswDZ5k+lwIDHN9Gj4lu+oe8qpcIhPifjaIOZmo",
            10..109,
            "over the limit",
        ),
        (
            "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$Bf6+QdtUMNazEruSRB2NRA",
            10..63,
            "without salt or output",
        ),
        ("{BLF-CRYPT}$6$abc$def", 11..21, "starts with $2y$"),
        (
            "{BLF-CRYPT}$2x$05$niZ17LWc.DgJyQ.C7MOKrOB0zSfdWXGPb/TnerGEv2r.odMbrgE2G",
            11..71,
            "starts with $2y$",
        ),
        ("{BLF-CRYPT}$2y$05$niZ17LWc", 11..26, "not a bcrypt hash"),
        (
            "{BLF-CRYPT}$2y$03$niZ17LWc.DgJyQ.C7MOKrOB0zSfdWXGPb/TnerGEv2r.odMbrgE2G",
            11..71,
            "cost 3",
        ),
        ("{SHA256-CRYPT}$6$a$b", 14..20, "is $5$[rounds=N$]salt$hash"),
        (
            "{SHA512-CRYPT}$6$onlysalt",
            14..25,
            "is $6$[rounds=N$]salt$hash",
        ),
        ("{SHA512-CRYPT}$6$rounds=10$s$h", 14..30, "rounds must be"),
        ("{SHA512-CRYPT}$6$s*lt$h", 14..23, "the salt is"),
        (
            "{SHA256-CRYPT}$5$salt$tooshort",
            14..30,
            "must be 43 characters",
        ),
    ] {
        let (got_span, message, _) = refused(text);
        assert!(message.contains(why), "{text}: {message}");
        assert_eq!(got_span, span, "{text}: {message}");
    }
}

#[test]
fn a_bare_hash_suggests_its_scheme() {
    let (span, message, help) =
        refused("$6$FfOE6H40MUGd4Zoo$7zDNdbltHQuSFcWZzxeTo1xgV.SoeT7CKP3ADg.0mD5");
    assert_eq!(span, 0..1);
    assert!(message.contains("no {SCHEME} prefix"), "{message}");
    let help = help.unwrap();
    assert!(help.contains("{SHA512-CRYPT}$6$FfOE6H40M..."), "{help}");
    let (_, _, help) = refused("secret");
    assert!(help.unwrap().contains("known schemes"));
}

#[test]
fn passwd_file() {
    let text = format!(
        "# made with doveadm pw\n\nalice@example.test:{}\nbob:{}::::::\n  # indented comment\ncarol:{}:1000:1000::/home/carol:/bin/sh:\r\n",
        VECTORS[7].1, VECTORS[2].1, VECTORS[11].1
    );
    let file = parse_passwd(&text).unwrap();
    assert_eq!(file.len(), 3);
    assert_eq!(
        file.get("alice@example.test").unwrap().scheme(),
        Scheme::Sha512Crypt
    );
    assert!(file.get("carol").unwrap().verify(PASSWORD));
    assert!(file.get("Alice@example.test").is_none());
    assert!(file.get("dave").is_none());
}

#[test]
fn passwd_file_errors() {
    let text = format!(
        "alice:{a}\n:{a}\nbob\nb ob:{a}\nEve:{a}\nalice:{a}\nfrank:{{NOPE}}x\ngina:{{PLAIN}}\n",
        a = VECTORS[12].1
    );
    let errors = parse_passwd(&text).expect_err("invalid");
    let got: Vec<(u32, u32, &str)> = errors
        .iter()
        .map(|e| (e.line, e.column, e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (2, 1, "empty user name"),
            (3, 1, "no password for `bob`"),
            (4, 2, "` ` in user name `b ob`"),
            (
                5,
                1,
                "user name `Eve` has upper-case letters and could never log in"
            ),
            (6, 1, "duplicate user `alice` (first on line 1)"),
            (7, 8, "unknown password scheme `NOPE`"),
            (8, 7, "empty {PLAIN} password"),
        ]
    );
    // byte spans are in the whole text, for the caret
    let e = &errors[5];
    assert_eq!(&text[e.byte_span.clone()], "NOPE");
}

#[test]
fn unknown_users_are_verified_against_the_most_common_kind() {
    // two SHA512-CRYPT (default rounds), one bcrypt, one argon2: the stand-in is the
    // first SHA512-CRYPT entry, whatever the order
    let text = format!(
        "a:{}\nb:{}\nc:{}\nd:{}\ne:{}\n",
        VECTORS[2].1, VECTORS[0].1, VECTORS[8].1, VECTORS[7].1, VECTORS[10].1
    );
    let file = parse_passwd(&text).unwrap();
    let stand_in = file.stand_in().unwrap();
    assert!(Arc::ptr_eq(stand_in, file.get("d").unwrap()));
    // rounds=10000 is another cost than the default 5000
    assert_ne!(
        file.get("c").unwrap().cost_class(),
        file.get("d").unwrap().cost_class()
    );
    assert!(parse_passwd("# nobody\n").unwrap().stand_in().is_none());
}

#[test]
fn lookup_names_follow_dovecots_defaults() {
    assert_eq!(
        lookup_name("Alice@Example.TEST").as_deref(),
        Some("alice@example.test")
    );
    assert_eq!(lookup_name("a.b-c_d@x").as_deref(), Some("a.b-c_d@x"));
    for bad in ["", "a b", "a+tag@x", "a'--", "é@x", &"a".repeat(256)] {
        assert_eq!(lookup_name(bad), None, "{bad}");
    }
}

/// How long one verification takes with the costs Dovecot uses by default. Not a
/// timed test: run it to see the numbers (`cargo test --release --lib
/// verification_cost -- --ignored --nocapture`).
#[test]
#[ignore = "a measurement, not a test"]
fn verification_cost() {
    for (tool, stored) in VECTORS {
        let parsed = StoredPassword::parse(stored).unwrap();
        let runs = 5;
        let start = std::time::Instant::now();
        for _ in 0..runs {
            assert!(parsed.verify(PASSWORD));
        }
        let each = start.elapsed() / runs;
        println!(
            "{:<40} {each:>10.2?}  {}",
            tool,
            &stored[..stored.find('}').unwrap() + 1]
        );
    }
}
