//! The dry run and the daemon agree: every case of every example suite, and a set of
//! tricky envelopes (bare names, quoted local parts, address literals, invalid domains,
//! unknown users, a hook that fails, a mail loop, our own Received: header), run
//! through `Pipeline::dry_run` and through mtad's session, must get the same replies at
//! every stage: the same refusal, word for word, or an acceptance in both.
//!
//! The session is a live mtad over TCP, running the example's own configuration with
//! only its listeners moved to loopback ports that take a PROXY header from loopback
//! (so that the case's client address is the one the policy sees), its spool and
//! Maildirs in a temporary directory, and delivery kept in the queue. Two kinds of case
//! run the same session code in memory instead (`smtp::transcript`): an encrypted
//! session (STARTTLS, or an implicit-TLS listener, with the listener's own
//! certificate), and a client the `authentication` checks look up in DNS (the case's
//! DNS fixture answers; a live daemon would ask a real resolver), and a client that
//! logged in (the session starts authenticated as the case's user, as `--auth` means:
//! the dry run never knows a password).

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use mtad::config::Config;
use mtad::policy::{DryEnvelope, DryRunReport, Pipeline};

/// A copy of a configuration running live: each listener's port.
struct Live {
    /// Stopped when dropped.
    mtad: Mtad,
    ports: BTreeMap<String, u16>,
    /// Listeners a plain client cannot talk to (implicit TLS, or STARTTLS required).
    tls_only: Vec<String>,
    /// Those of them with implicit TLS.
    implicit: Vec<String>,
}

/// The value of `key="..."` in `line`, and where it stands.
fn property(line: &str, key: &str) -> Option<(usize, usize, String)> {
    let start = line.find(&format!(" {key}=\""))? + key.len() + 3;
    let end = start + line[start..].find('"')?;
    Some((start, end, line[start..end].to_owned()))
}

/// Rewrites `config` (in a directory of its own) for a live run and starts it.
fn start_live(dir: tempfile::TempDir, config: PathBuf) -> Live {
    let text = std::fs::read_to_string(&config).unwrap();
    let mut ports = BTreeMap::new();
    let mut tls_only = Vec::new();
    let mut implicit = Vec::new();
    let spool = dir.path().join("spool");
    let mut out = String::new();
    let mut main_port = 0;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let mut line = line.to_owned();
        if trimmed.starts_with("listen ") {
            let name = trimmed.split('"').nth(1).unwrap().to_owned();
            let port = free_port();
            if main_port == 0 {
                main_port = port;
            }
            let (s, e, _) = property(&line, "address").expect("listen address=");
            line = format!("{}127.0.0.1:{port}{}", &line[..s], &line[e..]);
            if let Some((s, e, _)) = property(&line, "proxies") {
                line = format!("{}agreement-proxies{}", &line[..s], &line[e..]);
            } else if line.contains("proxy-protocol=#true") {
                let code_end = line.find("//").unwrap_or(line.len());
                line.insert_str(code_end, " proxies=\"agreement-proxies\" ");
            } else {
                let code_end = line.find("//").unwrap_or(line.len());
                line.insert_str(
                    code_end,
                    " proxy-protocol=#true proxies=\"agreement-proxies\" ",
                );
            }
            if line.contains("implicit-tls=#true") || line.contains("starttls=\"required\"") {
                tls_only.push(name.clone());
            }
            if line.contains("implicit-tls=#true") {
                implicit.push(name.clone());
            }
            ports.insert(name, port);
        } else if trimmed.starts_with("spool ") {
            line = format!("    spool \"{}\"", spool.display());
        } else if trimmed.starts_with("local-base ") {
            line = format!("    local-base \"{}\"", dir.path().join("mail").display());
        } else if trimmed.starts_with("control-socket ") {
            line = format!(
                "    control-socket \"{}\"",
                dir.path().join("control.sock").display()
            );
        } else if trimmed.starts_with("metrics ") {
            line = format!("    metrics \"127.0.0.1:{}\"", free_port());
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str("\nnetworks \"agreement-proxies\" \"127.0.0.0/8\"\n");
    // nothing leaves: the queue keeps the mail, and no resolver is reachable
    let extra = "    queue-only #true\n    dns-server \"127.0.0.1:9\"\n";
    if out.contains("\ndelivery {\n") {
        out = out.replacen("\ndelivery {\n", &format!("\ndelivery {{\n{extra}"), 1);
    } else {
        out.push_str(&format!("\ndelivery {{\n{extra}}}\n"));
    }
    std::fs::write(&config, out).unwrap();
    let mtad = Mtad::start_file(dir, config, spool, main_port);
    Live {
        mtad,
        ports,
        tls_only,
        implicit,
    }
}

/// The same stages a dry run reports, as a live session answered them: (stage, rcpt,
/// first reply line).
fn live_session(port: u16, env: &DryEnvelope) -> Vec<(String, Option<String>, String)> {
    let ip = env.client_ip.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let mut c = Client::connect(port);
    let family = if ip.is_ipv4() { "TCP4" } else { "TCP6" };
    let to = if ip.is_ipv4() { "127.0.0.1" } else { "::1" };
    c.send(format!("PROXY {family} {ip} {to} 40000 {port}\r\n"));
    let mut got = Vec::new();
    let first = |r: String| r.lines().next().unwrap_or("").to_owned();
    let greeting = first(c.reply());
    let ok = greeting.starts_with('2');
    got.push(("connect".to_owned(), None, greeting));
    if !ok {
        return got;
    }
    let helo = env.helo.as_deref().unwrap_or("client.example");
    c.line(&format!("EHLO {helo}"));
    let r = first(c.reply());
    let ok = r.starts_with('2');
    got.push(("helo".to_owned(), None, r));
    if !ok {
        return got;
    }
    c.line(&format!("MAIL FROM:<{}>", env.sender));
    let r = first(c.reply());
    let ok = r.starts_with('2');
    got.push(("mail".to_owned(), None, r));
    if !ok {
        return got;
    }
    let mut accepted = 0;
    for rcpt in &env.recipients {
        c.line(&format!("RCPT TO:<{rcpt}>"));
        let r = first(c.reply());
        if r.starts_with('2') {
            accepted += 1;
        }
        got.push(("rcpt".to_owned(), Some(rcpt.clone()), r));
    }
    if accepted == 0 {
        return got;
    }
    c.line("DATA");
    let r = first(c.reply());
    if !r.starts_with('3') {
        got.push(("data".to_owned(), None, r));
        return got;
    }
    let message = env.message.clone().unwrap_or_default();
    let mut data = Vec::with_capacity(message.len() + 16);
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            data.push(b'.');
        }
        data.extend_from_slice(line);
    }
    if !data.is_empty() && !data.ends_with(b"\r\n") {
        data.extend_from_slice(b"\r\n");
    }
    data.extend_from_slice(b".\r\n");
    c.send(&data);
    got.push(("data".to_owned(), None, first(c.reply())));
    c.line("QUIT");
    got
}

/// The same stages as [`live_session`], from the real session code run in memory
/// (`smtp::transcript`) with the case's DNS fixture and the listener's own TLS: for the
/// cases whose `authentication` checks must not ask a real resolver, and the cases of
/// an encrypted session (`starttls`: STARTTLS first; an implicit-TLS listener is
/// encrypted from the start). The commands sent follow
/// what the dry run did (a refused stage ends the session, DATA only with a
/// recipient accepted); the replies are what the session answered.
fn memory_session(
    config: &Config,
    pipeline: &Arc<Pipeline>,
    env: &DryEnvelope,
    dry: &[(String, Option<String>, String)],
    starttls: bool,
) -> Vec<(String, Option<String>, String)> {
    use mtad::smtp::transcript::{Memory, Transcript, in_memory, open_spool};
    let ip = env.client_ip.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let accepted = |stage: &str| dry.iter().any(|(s, _, d)| s == stage && d.starts_with('('));
    let mut t = Transcript::new().expect(&[""]);
    let mut stages = vec![("connect".to_owned(), None)];
    let helo = env.helo.as_deref().unwrap_or("client.example");
    if accepted("connect") && starttls {
        // encrypted first, as the case says (an implicit-TLS listener is already)
        t = t
            .send(&[format!("EHLO {helo}")])
            .expect(&["250"])
            .starttls();
        stages.push(("tls-ehlo".to_owned(), None));
        stages.push(("starttls".to_owned(), None));
    }
    if accepted("connect") {
        t = t.send(&[format!("EHLO {helo}")]).expect(&[""]);
        stages.push(("helo".to_owned(), None));
    }
    if accepted("connect") && accepted("helo") {
        t = t
            .send(&[format!("MAIL FROM:<{}>", env.sender)])
            .expect(&[""]);
        stages.push(("mail".to_owned(), None));
    }
    if accepted("connect") && accepted("helo") && accepted("mail") {
        for rcpt in &env.recipients {
            t = t.send(&[format!("RCPT TO:<{rcpt}>")]).expect(&[""]);
            stages.push(("rcpt".to_owned(), Some(rcpt.clone())));
        }
        if accepted("rcpt") {
            let message =
                String::from_utf8_lossy(env.message.as_deref().unwrap_or_default()).into_owned();
            t = t
                .send(&["DATA"])
                .expect(&[""])
                .send_message(&message)
                .expect(&[""]);
            stages.push(("data-go-ahead".to_owned(), None));
            stages.push(("data".to_owned(), None));
        }
    }
    let spool_dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let played = runtime
        .block_on(in_memory(
            Memory {
                config,
                pipeline: pipeline.clone(),
                listener: &env.listener,
                client: std::net::SocketAddr::new(ip, 40000),
                dns: env.dns.clone(),
                spool: open_spool(spool_dir.path()).unwrap(),
                timeout: std::time::Duration::from_secs(20),
                authenticated: env.auth_user.clone(),
                tls: None,
                local: None,
            },
            &t,
        ))
        .unwrap();
    if let Some(m) = &played.mismatch {
        panic!("the in-memory session: {m:?} after {:?}", played.replies);
    }
    stages
        .into_iter()
        .zip(played.replies)
        .filter(|((stage, _), _)| {
            !matches!(stage.as_str(), "data-go-ahead" | "tls-ehlo" | "starttls")
        })
        .map(|((stage, rcpt), e)| {
            (
                stage,
                rcpt,
                e.reply.text().lines().next().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// `mtactl test-policy`'s dry run of `env`.
fn dry_run(config: &Config, pipeline: &Arc<Pipeline>, env: &DryEnvelope) -> DryRunReport {
    mtad::smtp::dry_run::offline(|o| mtad::control::test_policy::dry_run(o, config, pipeline, env))
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The dry run's stages before routing, as (stage, rcpt, what a client would read):
/// the reply of a refusal, or the class of an acceptance.
fn dry_session(report: &DryRunReport) -> Vec<(String, Option<String>, String)> {
    report
        .stages
        .iter()
        .filter(|s| s.stage != "route")
        .map(|s| {
            let said = match (s.verdict, &s.reply) {
                ("reject" | "defer", Some(r)) => r.clone(),
                (v, _) => format!("({v})"),
            };
            (s.stage.to_owned(), s.rcpt.clone(), said)
        })
        .collect()
}

/// Whether a live reply is what the dry run said: the same refusal text, or a 2xx/3xx
/// where the dry run accepted (accept, hold, discard).
fn agrees(dry: &str, live: &str) -> bool {
    if dry.starts_with('(') {
        live.starts_with('2')
    } else {
        dry == live
    }
}

/// Runs `cases` through `pipeline` and the live daemon; returns the disagreements and
/// the cases not run live (with why).
fn compare(
    config: &Config,
    pipeline: &Arc<Pipeline>,
    live: &Live,
    cases: &[(String, String, DryEnvelope)],
) -> (Vec<String>, Vec<String>, usize) {
    let mut wrong = Vec::new();
    let mut skipped = Vec::new();
    let mut in_memory = 0;
    for (name, at, env) in cases {
        let mut env = env.clone();
        if env.listener.is_empty() {
            env.listener = pipeline.default_listener().to_owned();
        }
        let env = &env;
        let ip = env.client_ip.unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let encrypted = env.tls || live.tls_only.contains(&env.listener);
        let implicit = live.implicit.contains(&env.listener);
        let why = if !live.ports.contains_key(&env.listener) {
            Some("no such listener")
        } else {
            None
        };
        if let Some(why) = why {
            skipped.push(format!("{at} \"{name}\": {why}"));
            continue;
        }
        let dry = dry_session(&dry_run(config, pipeline, env));
        // the `authentication` checks answer from the case's DNS fixture: the session
        // runs in memory with it, never against a real resolver
        let got = if encrypted
            || env.auth_user.is_some()
            || pipeline
                .authentication()
                .is_some_and(|a| a.applies(ip, &env.listener, env.auth_user.is_some()))
        {
            in_memory += 1;
            memory_session(config, pipeline, env, &dry, encrypted && !implicit)
        } else {
            live_session(live.ports[&env.listener], env)
        };
        let mut line = Vec::new();
        let n = dry.len().max(got.len());
        for i in 0..n {
            match (dry.get(i), got.get(i)) {
                (Some((stage, rcpt, d)), Some((lstage, _, l)))
                    if stage == lstage && agrees(d, l) =>
                {
                    if std::env::var_os("AGREEMENT_SHOW").is_some() && stage == "rcpt" {
                        eprintln!("{name}: {rcpt:?} dry {d:?} live {l:?}");
                    }
                }
                (d, l) => line.push(format!("      dry run {d:?}\n      daemon  {l:?}")),
            }
        }
        if !line.is_empty() {
            wrong.push(format!("{at} \"{name}\":\n{}", line.join("\n")));
        }
    }
    (wrong, skipped, in_memory)
}

fn example_suites(root: &Path) -> Vec<PathBuf> {
    let mut suites: Vec<PathBuf> = std::fs::read_dir(root.join("tests"))
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "kdl"))
                .collect()
        })
        .unwrap_or_default();
    suites.sort();
    suites
}

#[test]
fn every_example_case_gets_the_same_replies_from_the_dry_run_and_the_daemon() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(repo.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let (mut wrong, mut skipped, mut ran, mut memory) = (Vec::new(), Vec::new(), 0, 0);
    for name in &names {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("examples").join(name);
        copy_dir(&repo.join("examples").join(name), &root);
        copy_dir(&repo.join("policies"), &dir.path().join("policies"));
        let config_path = root.join("mtad.kdl");
        // the policy as the example states it (before the listeners move)
        let config = Config::load(&config_path).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let pipeline = Arc::new(Pipeline::build(&config).unwrap());
        let mut cases = Vec::new();
        for suite in example_suites(&root) {
            cases.extend(
                mtad::control::test_policy::envelopes(&suite)
                    .unwrap_or_else(|e| panic!("{}: {e:?}", suite.display())),
            );
        }
        let live = start_live(dir, config_path);
        let (w, s, m) = compare(&config, &pipeline, &live, &cases);
        ran += cases.len() - s.len();
        memory += m;
        wrong.extend(w);
        skipped.extend(s);
        drop(live);
    }
    eprintln!(
        "agreement: {ran} example cases run ({memory} of them in memory: TLS, AUTH, or DNS from their fixture), {} not (why, each):\n  {}",
        skipped.len(),
        skipped.join("\n  ")
    );
    assert!(
        skipped.is_empty() && ran >= 60,
        "only {ran} example cases could run: {skipped:?}"
    );
    assert!(
        wrong.is_empty(),
        "the dry run and the daemon disagree:\n{}",
        wrong.join("\n")
    );
}

/// The tricky envelopes, on a configuration with a local domain, aliases, a
/// local-recipients table, an address literal of ours and a hook that fails.
#[test]
fn tricky_envelopes_get_the_same_replies_from_the_dry_run_and_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("aliases"), "root: admin@example.test\n").unwrap();
    std::fs::write(
        dir.path().join("fails.rhai"),
        "fn rcpt(ctx) {\n    if ctx.rcpt.local == \"boom\" { let x = [1]; return x[5]; }\n    next()\n}\n",
    )
    .unwrap();
    let config = dir.path().join("mtad.kdl");
    std::fs::write(
        &config,
        format!(
            r#"server {{
    hostname "mx.example.test"
    origin "example.test"
    spool "{spool}"
}}
listen "mx" address="127.0.0.1:25"
networks "trusted" "10.0.0.0/8"
domains "local" "example.test"
domains "relay" "relay.example"
aliases file="aliases"
delivery {{
    local-recipients "aliases" "passwd"
}}
stage "data" {{
    reject header-matches="^Received: from no-trace-header" 550 "5.7.1" "not traced"
    reject header-matches="^Received: from hidden\\.example \\(\\[10\\..*by mx\\.example\\.test with ESMTP" 550 "5.7.1" "our trace header seen"
}}
stage "rcpt" {{
    hook "fails.rhai" function="rcpt"
    accept client="trusted"
    accept rcpt-domain="relay"
    reject 554 "5.7.1" "Relay access denied"
}}
"#,
            spool = dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let loaded = Config::load(&config).unwrap_or_else(|e| panic!("{e:?}"));
    let pipeline = Arc::new(Pipeline::build(&loaded).unwrap());
    let env = |client: &str, rcpts: &[&str]| DryEnvelope {
        client_ip: Some(client.parse().unwrap()),
        listener: "mx".into(),
        helo: Some("client.example".into()),
        sender: "sender@elsewhere.example".into(),
        recipients: rcpts.iter().map(|r| r.to_string()).collect(),
        message: Some(b"Subject: agreement\r\n\r\nbody\r\n".to_vec()),
        ..DryEnvelope::default()
    };
    let tricky: &[&str] = &[
        "root",
        "postmaster",
        "Postmaster",
        "\"root\"@example.test",
        "\"a b\"@relay.example",
        "root@[127.0.0.1]",
        "user@[192.0.2.1]",
        "user@-bad.example",
        "user@relay..example",
        "user@",
        "nobody-here@example.test",
        "root@EXAMPLE.TEST",
        "boom@relay.example",
        "a%b@relay.example",
        "someone@relay.example",
        "someone@elsewhere.example",
    ];
    let mut cases = Vec::new();
    // a data rule that reads the Received: header mtad itself adds: the daemon's
    // session and the dry run both write it before the data stage runs
    let mut traced = env("10.1.2.3", &["someone@relay.example"]);
    traced.helo = Some("hidden.example".into());
    cases.push((
        "our Received: header".to_owned(),
        "tricky".to_owned(),
        traced.clone(),
    ));
    let report = dry_run(&loaded, &pipeline, &traced);
    let data = report.stages.iter().find(|s| s.stage == "data").unwrap();
    assert_eq!(
        data.reply.as_deref(),
        Some("550 5.7.1 our trace header seen"),
        "{report:?}"
    );
    // a mail loop: 50 Received: headers and ours is one hop too many (hop-count 50)
    let mut looped = env("10.1.2.3", &["someone@relay.example"]);
    looped.message = Some(
        "Received: from a by b; x\r\n"
            .repeat(50)
            .into_bytes()
            .into_iter()
            .chain(b"Subject: loop\r\n\r\nbody\r\n".iter().copied())
            .collect(),
    );
    let report = dry_run(&loaded, &pipeline, &looped);
    let data = report.stages.iter().find(|s| s.stage == "data").unwrap();
    assert_eq!(
        data.reply.as_deref(),
        Some("554 5.4.6 Too many hops"),
        "{report:?}"
    );
    cases.push(("a mail loop".to_owned(), "tricky".to_owned(), looped));
    let mut one_less = env("10.1.2.3", &["someone@relay.example"]);
    one_less.message = Some(b"Received: from a by b; x\r\n".repeat(49));
    cases.push(("49 hops and ours".to_owned(), "tricky".to_owned(), one_less));
    for client in ["203.0.113.9", "10.1.2.3"] {
        for rcpt in tricky {
            cases.push((
                format!("{client} RCPT TO:<{rcpt}>"),
                "tricky".to_owned(),
                env(client, &[rcpt]),
            ));
        }
    }
    let live = start_live(dir, config);
    let (wrong, skipped, _) = compare(&loaded, &pipeline, &live, &cases);
    assert!(skipped.is_empty(), "{skipped:?}");
    assert!(
        wrong.is_empty(),
        "the dry run and the daemon disagree:\n{}",
        wrong.join("\n")
    );
    // the failing hook: the dry run shows the error the daemon logs, file:line:col and
    // cause
    let report = dry_run(
        &loaded,
        &pipeline,
        &env("203.0.113.9", &["boom@relay.example"]),
    );
    let rcpt = report.stages.iter().find(|s| s.stage == "rcpt").unwrap();
    let error = rcpt
        .error
        .as_deref()
        .expect("the hook's error in the dry run");
    assert!(
        error.contains("fails.rhai:2:") && error.contains("out of bounds"),
        "{error}"
    );
    let log = live
        .mtad
        .wait_log("policy hook failed", 1, std::time::Duration::from_secs(5));
    assert!(log.contains(error), "the daemon logged otherwise:\n{log}");
}
