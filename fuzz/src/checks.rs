//! `header-checks` and `body-checks` files (header_checks(5), body_checks(5)), loaded
//! by the configuration loader as mtad loads them (the regexp table, then every
//! action checked), then applied to a message by a dry run of the data stage (what
//! `mtactl test-policy` runs, and the same evaluation the daemon does at end of DATA):
//! fuzzed rules on a fuzzed message.
//!
//! Input: the header_checks file, NUL, the body_checks file, NUL, the message.

use mtad::policy::DryEnvelope;

use crate::Bytes;

pub fn run(data: &[u8]) {
    let mut b = Bytes::new(data);
    let header = crate::write_scratch("header_checks", b.field());
    let body = crate::write_scratch("body_checks", b.field());
    let message = b.rest();
    let text = format!(
        "{}networks \"trusted\" \"127.0.0.0/8\"\n\
         stage \"rcpt\" {{\n    accept\n}}\n\
         stage \"data\" {{\n    header-checks file={}\n    body-checks file={} size-limit=\"64k\"\n}}\n",
        crate::table::BASE,
        crate::kdl_string(&header.to_string_lossy()),
        crate::kdl_string(&body.to_string_lossy()),
    );
    let name = crate::data_dir().join("mtad.kdl");
    let Some((config, pipeline)) = crate::config::check(&name.to_string_lossy(), &text) else {
        return;
    };
    let envelope = DryEnvelope {
        client_ip: Some("192.0.2.1".parse().expect("address")),
        listener: "mx".into(),
        helo: Some("client.example".into()),
        sender: "sender@example.org".into(),
        recipients: vec!["rcpt@example.test".into()],
        message: Some(message.to_vec()),
        ..DryEnvelope::default()
    };
    // the real session in memory, as `mtactl test-policy` runs it
    if let Ok(Ok(report)) =
        mtad::smtp::dry_run::offline(|o| {
        mtad::control::test_policy::dry_run(o, &config, &pipeline, &envelope)
    })
    {
        let _ = mtad::control::test_policy::render_report(&report);
    }
}
