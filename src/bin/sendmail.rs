//! `sendmail`, `mailq`, `newaliases`: local programs hand their mail to mtad. Install
//! as /usr/sbin/sendmail (and link /usr/lib/sendmail, /usr/bin/mailq,
//! /usr/bin/newaliases to it); see docs/local-submission.md. Everything is in
//! [`mtad::control::sendmail`]; this file only reads argv.

use std::process::ExitCode;

use mtad::control::sendmail::{Invocation, exit, run};

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("sendmail")
        .to_owned();
    let rest: Vec<_> = args.collect();
    let inv = match Invocation::parse(&name, &rest) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(exit::EX_USAGE);
        }
    };
    let code = run(
        &inv,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    ExitCode::from(code)
}
