use super::*;

fn settings() -> Settings {
    Settings::default()
}

#[test]
fn senders_are_normalised_as_postgrey_does() {
    // postgrey 1.37's do_sender_substitutions
    assert_eq!(sender_key("list+bounces-42@lists.test"), "list@lists.test");
    assert_eq!(sender_key("bounce-123-456@x.test"), "bounce-#-#@x.test");
    assert_eq!(
        sender_key("user42@x.test"),
        "user42@x.test",
        "not a word of its own"
    );
    assert_eq!(sender_key("12.34@x.test"), "#.#@x.test");
    assert_eq!(
        sender_key("prvs=1234567890=alice@x.test"),
        "alice@x.test",
        "BATV prvs=TAG=local"
    );
    assert_eq!(
        sender_key("prvs=alice=1234abcdef@x.test"),
        "alice@x.test",
        "BATV prvs=local=TAG"
    );
    assert_eq!(sender_key(""), "", "the null sender");
    assert_eq!(sender_key("no-domain"), "no-domain");
}

#[test]
fn triplets_are_keyed_by_network_sender_and_recipient() {
    let s = settings();
    let ip = |t: &str| t.parse::<IpAddr>().unwrap();
    assert_eq!(
        triplet_text(ip("192.0.2.77"), "A+x@Src.test", "U@Example.test", &s),
        "192.0.2.0/a@src.test/u@example.test"
    );
    assert_eq!(client_net(ip("2001:db8:1:2:3:4:5:6"), &s), "2001:db8:1:2::");
    let host = Settings {
        ipv4_prefix: 32,
        ..settings()
    };
    assert_eq!(client_net(ip("192.0.2.77"), &host), "192.0.2.77");
    // one key for a /24, one per recipient
    let k = |c: &str, r: &str| keys(ip(c), "a@src.test", r, &s);
    assert_eq!(
        k("192.0.2.1", "u@x.test").triplet,
        k("192.0.2.200", "u@x.test").triplet
    );
    assert_ne!(
        k("192.0.2.1", "u@x.test").triplet,
        k("192.0.3.1", "u@x.test").triplet
    );
    assert_ne!(
        k("192.0.2.1", "u@x.test").triplet,
        k("192.0.2.1", "v@x.test").triplet
    );
    assert_ne!(
        k("192.0.2.1", "u@x.test").client,
        k("192.0.2.2", "u@x.test").client
    );
}

/// The sequence postgrey answers (peers.md §5): new → greylisted; again at once →
/// greylisted; after the delay → passes (the first pass); again → passes (known).
#[test]
fn a_triplet_passes_after_the_delay_and_within_the_window() {
    let s = settings();
    let local = Local::in_memory();
    let k = keys("192.0.2.7".parse().unwrap(), "a@src.test", "u@x.test", &s);
    let t0 = 1_800_000_000;
    assert_eq!(
        local.check_at(&k, &s, t0),
        Outcome::Greylisted { left: 300 }
    );
    assert_eq!(
        local.check_at(&k, &s, t0 + 100),
        Outcome::Greylisted { left: 200 }
    );
    assert_eq!(
        local.check_at(&k, &s, t0 + 300),
        Outcome::Passed { first_pass: true }
    );
    assert_eq!(
        local.check_at(&k, &s, t0 + 400),
        Outcome::Passed { first_pass: false }
    );
    // a month later it is still known (max-age 35 days from the last time seen)
    assert_eq!(
        local.check_at(&k, &s, t0 + 400 + 30 * 86400),
        Outcome::Passed { first_pass: false }
    );
    // and forgotten after 35 days unseen
    let later = t0 + 400 + 30 * 86400 + 36 * 86400;
    assert_eq!(
        local.check_at(&k, &s, later),
        Outcome::Greylisted { left: 300 }
    );
}

#[test]
fn a_retry_after_the_retry_window_starts_again() {
    let s = settings();
    let t0 = 1_800_000_000;
    let first = Some(Triplet {
        first: t0,
        last: t0,
    });
    let (outcome, update) = decide(&s, t0 + 2 * 86400 + 1, first, None);
    assert_eq!(outcome, Outcome::Greylisted { left: 300 });
    assert_eq!(update.triplet.unwrap().0.first, t0 + 2 * 86400 + 1);
    // within the window it passes
    let (outcome, _) = decide(&s, t0 + 2 * 86400, first, None);
    assert_eq!(outcome, Outcome::Passed { first_pass: true });
    // a pending triplet's record lives to the end of its retry window
    let (_, update) = decide(&s, t0 + 10, first, None);
    assert_eq!(update.triplet.unwrap().1, 2 * 86400 - 10);
}

#[test]
fn clients_that_pass_five_times_are_auto_allowlisted() {
    let s = settings();
    let local = Local::in_memory();
    let ip: IpAddr = "192.0.2.7".parse().unwrap();
    let mut t = 1_800_000_000;
    for n in 0..5 {
        let k = keys(ip, "a@src.test", &format!("u{n}@x.test"), &s);
        assert!(matches!(
            local.check_at(&k, &s, t),
            Outcome::Greylisted { .. }
        ));
        assert_eq!(
            local.check_at(&k, &s, t + 300),
            Outcome::Passed { first_pass: true }
        );
        // only one pass an hour counts
        t += 3600;
    }
    let k = keys(ip, "b@other.test", "new@x.test", &s);
    assert_eq!(local.check_at(&k, &s, t), Outcome::AutoAllowlisted);
    // another address of the same /24 is not allowlisted
    let other = keys(
        "192.0.2.8".parse().unwrap(),
        "b@other.test",
        "new@x.test",
        &s,
    );
    assert!(matches!(
        local.check_at(&other, &s, t),
        Outcome::Greylisted { .. }
    ));
    // passes within one hour count once
    let local = Local::in_memory();
    for n in 0..6 {
        let k = keys(ip, "a@src.test", &format!("u{n}@x.test"), &s);
        local.check_at(&k, &s, t);
        local.check_at(&k, &s, t + 300);
    }
    let k = keys(ip, "b@other.test", "new@x.test", &s);
    assert!(matches!(
        local.check_at(&k, &s, t + 400),
        Outcome::Greylisted { .. }
    ));
    // auto-allowlist 0: never
    let off = Settings {
        auto_allowlist: 0,
        ..settings()
    };
    let (_, update) = decide(
        &off,
        t,
        Some(Triplet {
            first: t - 300,
            last: t - 300,
        }),
        None,
    );
    assert_eq!(update.client, None);
}

#[test]
fn the_state_survives_a_restart_and_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("greylist");
    let s = Settings {
        max_entries: 100,
        ..settings()
    };
    let ip: IpAddr = "192.0.2.7".parse().unwrap();
    let k = keys(ip, "a@src.test", "u@x.test", &s);
    let now = super::now();
    {
        let local = Local::open(&path);
        assert!(matches!(
            local.check_at(&k, &s, now - 400),
            Outcome::Greylisted { .. }
        ));
        local.save().unwrap();
    }
    let local = Local::open(&path);
    assert_eq!(local.len(), 1);
    assert_eq!(
        local.check_at(&k, &s, now),
        Outcome::Passed { first_pass: true }
    );
    // a damaged file: its bad lines are skipped
    std::fs::write(
        &path,
        format!(
            "{MAGIC}\nt short 1 2 3\nx {} 1 2 {}\nt {} 1 2\n",
            "a".repeat(32),
            now + 99,
            "b".repeat(32)
        ),
    )
    .unwrap();
    assert!(Local::open(&path).is_empty());
    std::fs::write(&path, "not ours\n").unwrap();
    assert!(Local::open(&path).is_empty());
    // bounded: past max-entries the least recently seen go
    for n in 0..250 {
        let k = keys(ip, "a@src.test", &format!("u{n}@x.test"), &s);
        local.check_at(&k, &s, now + n);
    }
    assert!(local.len() <= 100, "{}", local.len());
    let newest = keys(ip, "a@src.test", "u249@x.test", &s);
    assert_eq!(
        local.check_at(&newest, &s, now + 300 + 249),
        Outcome::Passed { first_pass: true }
    );
}

#[test]
fn the_reply_text_says_what_postgrey_says() {
    let s = Settings {
        text: "Greylisted, see http://postgrey.schweikert.ch/help/%r.html (%s s)".into(),
        ..settings()
    };
    assert_eq!(
        reply_text(&s, 42, "u@example.test"),
        "Greylisted, see http://postgrey.schweikert.ch/help/example.test.html (42 s)"
    );
}

/// A [`Shared`] store whose Redis does not answer (nothing listens on its port), with
/// `fallback`. Call inside a Tokio runtime.
fn shared_without_redis(fallback: crate::cluster::Fallback) -> Shared {
    let cluster = crate::cluster::Cluster::without_redis(fallback);
    Shared {
        cluster: Arc::new(cluster),
        local: Arc::new(Local::in_memory()),
        ahead: Default::default(),
        passed: Default::default(),
    }
}

/// Redis that does not answer: `fallback "local"` greylists with the node's own
/// state, `fallback "tempfail"` says the state is unavailable (a 451), never a pass.
#[test]
fn without_redis_the_fallback_applies() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _in = rt.enter();
    let s = settings();
    let k = keys("192.0.2.7".parse().unwrap(), "a@src.test", "u@x.test", &s);
    for (fallback, local) in [
        (crate::cluster::Fallback::Local, true),
        (crate::cluster::Fallback::Tempfail, false),
    ] {
        let shared = shared_without_redis(fallback);
        let got = std::thread::scope(|t| t.spawn(|| shared.check(&k, &s)).join().unwrap());
        if local {
            assert!(
                matches!(got, Ok(Outcome::Greylisted { left: 300 })),
                "{got:?}"
            );
            assert_eq!(shared.local.len(), 1);
        } else {
            assert!(got.is_err(), "{got:?}");
            assert!(shared.local.is_empty());
        }
    }
}

#[test]
fn records_read_ahead_serve_one_check_of_their_keys() {
    let s = settings();
    let k = keys("192.0.2.7".parse().unwrap(), "a@src.test", "u@x.test", &s);
    let other = keys("192.0.2.7".parse().unwrap(), "a@src.test", "v@x.test", &s);
    let ahead = Ahead::default();
    ahead.put(k.clone(), (1_700_000_000, Some((1, 2)), None));
    assert_eq!(ahead.take(&other), None, "another triplet's");
    assert_eq!(ahead.take(&k), Some((1_700_000_000, Some((1, 2)), None)));
    assert_eq!(ahead.take(&k), None, "used once");
    // bounded: the oldest go first
    for i in 0..AHEAD_MAX + 10 {
        let k = keys(
            "192.0.2.7".parse().unwrap(),
            "a@src.test",
            &format!("{i}@x.test"),
            &s,
        );
        ahead.put(k, (u64::try_from(i).unwrap(), None, None));
    }
    let first = keys("192.0.2.7".parse().unwrap(), "a@src.test", "0@x.test", &s);
    let last = keys(
        "192.0.2.7".parse().unwrap(),
        "a@src.test",
        &format!("{}@x.test", AHEAD_MAX + 9),
        &s,
    );
    assert_eq!(ahead.take(&first), None);
    assert!(ahead.take(&last).is_some());
    assert!(ahead.0.lock().unwrap().len() <= AHEAD_MAX);
}

/// A pass is remembered for its triplet (an auto-allowlisting for its client): the
/// next check decides on it with no read (Redis here does not answer, and the
/// fallback is `tempfail`: a read would fail). A triplet greylisted is not
/// remembered, nor is another triplet of a client that only passed one.
#[test]
fn passes_are_remembered_and_decide_without_a_read() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _in = rt.enter();
    let shared = shared_without_redis(crate::cluster::Fallback::Tempfail);
    let s = settings();
    let ip = "192.0.2.7".parse().unwrap();
    let k = keys(ip, "a@src.test", "u@x.test", &s);
    let other = keys(ip, "a@src.test", "v@x.test", &s);
    let check = |k: &Keys| std::thread::scope(|t| t.spawn(|| shared.check(k, &s)).join().unwrap());
    let now = 1_700_000_000;
    // first seen: greylisted, not remembered
    assert!(matches!(
        shared.settle(&k, &s, (now, None, None)),
        Outcome::Greylisted { .. }
    ));
    assert_eq!(shared.passed.get(&k), None);
    assert!(shared.read_ahead(&k).is_some());
    assert!(check(&k).is_err(), "read, and Redis does not answer");
    // its retry passes: remembered, with the record as written
    let first = now - 400;
    assert_eq!(
        shared.settle(&k, &s, (now, Some((first, first)), None)),
        Outcome::Passed { first_pass: true }
    );
    let (_, t, c) = shared.passed.get(&k).unwrap();
    assert_eq!(t, Some((first, now)));
    assert_eq!(c, Some((1, now)), "its client counted once");
    assert_eq!(shared.read_ahead(&k), None, "nothing to read ahead");
    assert_eq!(check(&k).unwrap(), Outcome::Passed { first_pass: false });
    assert!(check(&other).is_err(), "another triplet is read");
    // a client on the auto-allowlist: every triplet of it passes unread
    let listed = (u64::from(s.auto_allowlist), now - 60);
    assert_eq!(
        shared.settle(&other, &s, (now, None, Some(listed))),
        Outcome::AutoAllowlisted
    );
    let third = keys(ip, "b@src.test", "w@x.test", &s);
    assert_eq!(check(&third).unwrap(), Outcome::AutoAllowlisted);
}
