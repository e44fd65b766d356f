//! `sendmail` (also `mailq` and `newaliases`): the command every program on a Unix
//! host hands its mail to, with Postfix's options and meanings. This module parses
//! the command line ([`Invocation::parse`]) and runs it ([`run`]); `src/bin/sendmail.rs`
//! only calls them. How the message reaches the daemon: [`crate::queue::maildrop`];
//! the security model: `docs/local-submission.md`.

use std::ffi::OsString;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::policy::local::{
    CleanupError, LocalMessage, Site, SubmitRefusal, Submitter, cleanup_local, may_submit,
};
use crate::queue::maildrop::{self, Dropped, MaildropError};

/// sysexits.h, as sendmail(8) exits.
pub use super::sysexits as exit;
use super::sysexits::*;

/// What the command was asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `-bm` (the default): read a message and submit it.
    Deliver,
    /// `-bs`: SMTP on standard input and output.
    Smtp,
    /// `-bp`, or the name `mailq`: list the queue.
    List,
    /// `-bi`, `-I`, or the name `newaliases`: check the aliases, make mtad reload.
    Aliases,
    /// `-bv`: say where each recipient would go, send nothing.
    Verify,
    /// `-q`: attempt every queued message now.
    Flush,
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub mode: Mode,
    /// `-C`; `None`: [`super::config_path::resolve`] chooses.
    pub config: Option<PathBuf>,
    /// `-f`/`-r`.
    pub sender: Option<String>,
    /// `-F`.
    pub full_name: Option<String>,
    pub recipients: Vec<String>,
    /// `-t`.
    pub extract: bool,
    /// `-i`/`-oi`: a line with a lone dot does not end the message.
    pub ignore_dots: bool,
    /// `-B 8BITMIME|7BIT`.
    pub body_8bit: Option<bool>,
    /// `-N`, `-R`, `-V` as given.
    pub notify: Option<String>,
    pub ret: Option<String>,
    pub envid: Option<String>,
    pub verbose: bool,
    /// Options accepted and ignored, or unknown: said on stderr.
    pub warnings: Vec<String>,
}

/// A command line that cannot be run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

/// Options that take a value (`-fVALUE` or `-f VALUE`), as Postfix's getopt string.
const WITH_VALUE: &str = "ABCFLNORVXbefhoprq";

/// sendmail's options as clap describes them, for sendmail(1) and its completions
/// ([`super::manual`]); the parser is [`Invocation::parse`] (Postfix's getopt rules,
/// which clap does not follow), and a test keeps the two in agreement: every option
/// here is one the parser knows, with a value exactly when `WITH_VALUE` says so, and
/// every option the parser knows is here.
pub fn command() -> clap::Command {
    use clap::{Arg, ArgAction};
    let flag = |c: char, help: &'static str| {
        Arg::new(c.to_string())
            .short(c)
            .action(ArgAction::SetTrue)
            .help(help)
    };
    let value = |c: char, name: &'static str, help: &'static str| {
        Arg::new(c.to_string())
            .short(c)
            .value_name(name)
            .action(ArgAction::Append)
            .help(help)
    };
    let ignored = "Accepted and ignored, as Postfix does.";
    clap::Command::new("sendmail")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Hand a message to mtad, with Postfix's sendmail options (also mailq, newaliases)")
        .long_about(
            "Reads a message on standard input and drops it in mtad's maildrop \
             (local-submission { maildrop }), on stable storage before it exits 0, \
             whether mtad runs or not; mtad picks it up and runs it through its policy \
             on the listener \"sendmail\". Installed setgid to the maildrop's group. \
             Called as mailq it lists the queue (-bp), as newaliases it checks the \
             aliases and makes mtad reload (-bi). Exit codes are sysexits.h's. \
             See /usr/share/doc/mtad/local-submission.md.",
        )
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(value('b', "MODE", "Mode: m (read a message and submit it, the default), p (mailq: list the queue), i (newaliases), v (say where each recipient would go, send nothing), s (SMTP on standard input and output). d (daemon) is refused: start mtad"))
        .arg(flag('t', "Recipients from the To:, Cc: and Bcc: headers too; Bcc: is removed"))
        .arg(flag('i', "A line with a lone dot does not end the message"))
        .arg(value('f', "ADDR", "The envelope sender ('' or '<>': the null sender)"))
        .arg(value('r', "ADDR", "The envelope sender, as -f"))
        .arg(value('F', "NAME", "The full name for an added From: header"))
        .arg(value('B', "TYPE", "The body type: 8BITMIME or 7BIT"))
        .arg(value('N', "NOTIFY", "DSN notify: kept with the message"))
        .arg(value('V', "ENVID", "DSN envelope id: kept with the message"))
        .arg(value('R', "RET", "DSN return: accepted and ignored"))
        .arg(value('o', "OPTION", "-oi is -i; every other -o option (-oem, -odi, ...) is accepted and ignored"))
        .arg(flag('I', "newaliases, as -bi"))
        .arg(value('q', "INTERVAL", "Attempt every queued message now (through the running mtad)"))
        .arg(flag('v', "Say where the message was dropped"))
        .arg(value('C', "FILE", "Another configuration than /etc/mtad/mtad.kdl"))
        .args(['A', 'L', 'O', 'X', 'e', 'h', 'p'].map(|c| value(c, "VALUE", ignored)))
        .args(['G', 'U', 'c', 'm', 'n', 'x'].map(|c| flag(c, ignored)))
        .arg(
            Arg::new("recipients")
                .value_name("RECIPIENT")
                .num_args(0..)
                .help("Recipients; \"a, b\" in one argument is two"),
        )
}

impl Invocation {
    /// Parses `args` (without argv[0]); `name` is argv[0]'s file name, which picks
    /// the mode for `mailq` and `newaliases`.
    pub fn parse(name: &str, args: &[OsString]) -> Result<Invocation, UsageError> {
        let mut inv = Invocation {
            mode: match name {
                "mailq" => Mode::List,
                "newaliases" => Mode::Aliases,
                _ => Mode::Deliver,
            },
            config: None,
            sender: None,
            full_name: None,
            recipients: Vec::new(),
            extract: false,
            ignore_dots: false,
            body_8bit: None,
            notify: None,
            ret: None,
            envid: None,
            verbose: false,
            warnings: Vec::new(),
        };
        let mut i = 0;
        while i < args.len() {
            let arg = args[i]
                .to_str()
                .ok_or_else(|| UsageError("an argument is not valid UTF-8".into()))?;
            i += 1;
            if arg == "--" {
                break;
            }
            if !arg.starts_with('-') || arg == "-" {
                i -= 1;
                break;
            }
            for (at, opt) in arg[1..].char_indices() {
                let value = if WITH_VALUE.contains(opt) {
                    let rest = &arg[1 + at + opt.len_utf8()..];
                    if !rest.is_empty() {
                        Some(rest.to_owned())
                    } else if opt == 'q' {
                        // -q alone is a flush; -qINTERVAL too
                        Some(String::new())
                    } else if i < args.len() {
                        i += 1;
                        Some(
                            args[i - 1]
                                .to_str()
                                .ok_or_else(|| UsageError("an argument is not valid UTF-8".into()))?
                                .to_owned(),
                        )
                    } else {
                        return Err(UsageError(format!("option -{opt} needs a value")));
                    }
                } else {
                    None
                };
                inv.option(opt, value.as_deref())?;
                if value.is_some() {
                    break;
                }
            }
        }
        for a in &args[i..] {
            let a = a
                .to_str()
                .ok_or_else(|| UsageError("a recipient is not valid UTF-8".into()))?;
            // Postfix accepts "a, b" as two recipients
            inv.recipients.extend(
                a.split(',')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned),
            );
        }
        Ok(inv)
    }

    fn option(&mut self, opt: char, value: Option<&str>) -> Result<(), UsageError> {
        let v = value.unwrap_or_default();
        match opt {
            'b' => {
                self.mode = match v {
                    "m" => Mode::Deliver,
                    "s" => Mode::Smtp,
                    "p" => Mode::List,
                    "i" => Mode::Aliases,
                    "v" => Mode::Verify,
                    "d" | "D" => {
                        return Err(UsageError(
                            "-bd: sendmail does not run the daemon; start mtad".into(),
                        ));
                    }
                    other => return Err(UsageError(format!("unsupported mode: -b{other}"))),
                }
            }
            'I' => self.mode = Mode::Aliases,
            'q' => {
                if v.is_empty() || v.chars().next().is_some_and(|c| c.is_ascii_digit()) {
                    self.mode = Mode::Flush;
                } else {
                    self.warnings.push(format!(
                        "-q{v}: only -q (flush everything) is supported; flushing everything"
                    ));
                    self.mode = Mode::Flush;
                }
            }
            'C' => self.config = Some(PathBuf::from(v)),
            'f' | 'r' => self.sender = Some(v.trim().to_owned()),
            'F' => self.full_name = Some(v.to_owned()),
            't' => self.extract = true,
            'i' => self.ignore_dots = true,
            // -oi; -oem, -oee, -odi, -odb, -oQ...: accepted and ignored, as Postfix does
            'o' => {
                if v.starts_with('i') {
                    self.ignore_dots = true;
                }
            }
            'B' => {
                self.body_8bit = match v.to_ascii_uppercase().as_str() {
                    "8BITMIME" => Some(true),
                    "7BIT" => Some(false),
                    _ => {
                        return Err(UsageError(format!(
                            "-B{v}: the body type is 8BITMIME or 7BIT"
                        )));
                    }
                }
            }
            'N' => self.notify = Some(v.to_owned()),
            'R' => self.ret = Some(v.to_owned()),
            'V' => self.envid = Some(v.to_owned()),
            'v' => self.verbose = true,
            // accepted and ignored, as Postfix does
            'A' | 'L' | 'O' | 'X' | 'e' | 'h' | 'p' | 'G' | 'U' | 'c' | 'm' | 'n' | 'x' => {}
            other => self
                .warnings
                .push(format!("-{other} option ignored (unknown)")),
        }
        Ok(())
    }
}

/// What `sendmail` knows of the configuration. The whole configuration when this user
/// may read it (root, mtad's user); else the few settings submission needs, read from
/// the main file alone (a DKIM key or a TLS key is rightly not readable by everyone):
/// then the sender-logins table is checked by the daemon only.
pub enum Settings {
    Full(Box<(Config, crate::policy::Pipeline)>),
    Light(Light),
}

/// The settings of the main file that submission needs.
#[derive(Clone, Debug, Default)]
pub struct Light {
    pub maildrop: Option<PathBuf>,
    pub authorized_users: Option<Vec<String>>,
    pub sender_logins: bool,
    pub origin: Option<String>,
    pub hostname: Option<String>,
    pub message_size: Option<u64>,
    pub spool: Option<PathBuf>,
}

impl Settings {
    pub fn load(path: &Path) -> Result<Settings, String> {
        match crate::policy::Pipeline::load(path) {
            Ok(both) => Ok(Settings::Full(Box::new(both))),
            Err(full) => match light(path) {
                Ok(l) if l.maildrop.is_some() => Ok(Settings::Light(l)),
                _ => Err(full.to_string()),
            },
        }
    }

    fn maildrop(&self) -> Option<&Path> {
        match self {
            Settings::Full(b) => b.0.local_submission.as_ref().map(|l| l.maildrop.as_path()),
            Settings::Light(l) => l.maildrop.as_deref(),
        }
    }

    fn origin_and_hostname(&self) -> (String, String) {
        match self {
            Settings::Full(b) => (b.0.server.origin.clone(), b.0.server.hostname.clone()),
            Settings::Light(l) => {
                let host = l.hostname.clone().unwrap_or_else(|| "localhost".into());
                (l.origin.clone().unwrap_or_else(|| host.clone()), host)
            }
        }
    }

    fn message_size(&self) -> u64 {
        match self {
            Settings::Full(b) => b.0.limits.message_size as u64,
            Settings::Light(l) => l
                .message_size
                .unwrap_or(crate::config::Limits::default().message_size as u64),
        }
    }

    fn may_submit(&self, who: &Submitter, sender: Option<&str>) -> Result<(), SubmitRefusal> {
        match self {
            Settings::Full(b) => may_submit(b.0.local_submission.as_ref(), who, sender),
            Settings::Light(l) => {
                let settings = crate::config::LocalSubmission {
                    maildrop: l.maildrop.clone().unwrap_or_default(),
                    group: None,
                    authorized_users: l.authorized_users.clone(),
                    sender_logins: None,
                    milters: Vec::new(),
                };
                may_submit(Some(&settings), who, sender)
            }
        }
    }
}

/// The main file's `local-submission`, `server` and `limits` settings, without
/// reading any other file.
fn light(path: &Path) -> Result<Light, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let doc: kdl::KdlDocument = text.parse().map_err(|e: kdl::KdlError| e.to_string())?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut l = Light::default();
    let first_string = |n: &kdl::KdlNode| {
        n.entries()
            .iter()
            .find(|e| e.name().is_none())
            .and_then(|e| e.value().as_string())
            .map(str::to_owned)
    };
    for node in doc.nodes() {
        let children = node.children().map(|c| c.nodes()).unwrap_or_default();
        match node.name().value() {
            "local-submission" => {
                for c in children {
                    match c.name().value() {
                        "maildrop" => l.maildrop = first_string(c).map(|p| dir.join(p)),
                        "authorized-users" => {
                            l.authorized_users = Some(
                                c.entries()
                                    .iter()
                                    .filter_map(|e| e.value().as_string().map(str::to_owned))
                                    .collect(),
                            )
                        }
                        "sender-logins" => l.sender_logins = true,
                        _ => {}
                    }
                }
            }
            "server" => {
                for c in children {
                    match c.name().value() {
                        "origin" => l.origin = first_string(c),
                        "hostname" => l.hostname = first_string(c),
                        "spool" => l.spool = first_string(c).map(|p| dir.join(p)),
                        _ => {}
                    }
                }
            }
            "limits" => {
                for c in children {
                    if c.name().value() == "message-size"
                        && let Some(s) = first_string(c)
                    {
                        l.message_size = crate::config::parse_size(&s).ok();
                    }
                }
            }
            _ => {}
        }
    }
    Ok(l)
}

/// Runs `inv`: the exit status (sysexits.h). Errors are said on `err` in words.
pub fn run(inv: &Invocation, input: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    for w in &inv.warnings {
        let _ = writeln!(err, "sendmail: warning: {w}");
    }
    let config = match super::config_path::resolve(inv.config.as_deref(), "-C PATH") {
        Ok(path) => path,
        Err(e) => {
            let _ = writeln!(err, "sendmail: {e}");
            return EX_CONFIG;
        }
    };
    let settings = match Settings::load(&config) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(
                err,
                "sendmail: cannot read the configuration {}: {e}",
                config.display()
            );
            return EX_CONFIG;
        }
    };
    match inv.mode {
        Mode::Deliver => deliver(inv, &settings, input, err),
        Mode::Verify => verify(inv, &settings, out, err),
        Mode::Flush => flush(&config, err),
        Mode::List => list(&settings, out, err),
        Mode::Aliases => aliases(&config, err),
        Mode::Smtp => smtp(&settings, &mut std::io::BufReader::new(input), out, err),
    }
}

fn deliver(inv: &Invocation, settings: &Settings, input: &mut dyn Read, err: &mut dyn Write) -> u8 {
    let Some(dir) = settings.maildrop() else {
        let _ = writeln!(err, "sendmail: {}", SubmitRefusal::Off);
        return EX_UNAVAILABLE;
    };
    if inv.recipients.is_empty() && !inv.extract {
        let _ = writeln!(
            err,
            "sendmail: recipient addresses must be given on the command line or with -t"
        );
        return EX_USAGE;
    }
    let uid = nix::unistd::getuid().as_raw();
    let who = Submitter::from_uid(uid);
    if let Err(refusal) = settings.may_submit(&who, inv.sender.as_deref()) {
        let _ = writeln!(err, "sendmail: {refusal}");
        return EX_NOPERM;
    }
    let limit = settings.message_size();
    let message = match read_message(input, inv.ignore_dots, limit) {
        Ok(m) => m,
        Err(ReadError::TooBig) => {
            let _ = writeln!(
                err,
                "sendmail: the message is larger than the limit of {limit} bytes (limits {{ message-size }})"
            );
            return EX_DATAERR;
        }
        Err(ReadError::Io(e)) => {
            let _ = writeln!(err, "sendmail: cannot read the message: {e}");
            return EX_IOERR;
        }
    };
    // the daemon cleans up again with the queue id; here, only to refuse now what
    // it would refuse then
    let (origin, hostname) = settings.origin_and_hostname();
    let check = cleanup_local(
        &LocalMessage {
            submitter: &who,
            sender: inv.sender.as_deref(),
            recipients: &inv.recipients,
            extract: inv.extract,
            full_name: inv.full_name.as_deref(),
            body_8bit: inv.body_8bit,
            smtputf8: false,
            message: &message,
        },
        &Site {
            origin: &origin,
            hostname: &hostname,
            queue_id: "0",
            now: chrono::Local::now().fixed_offset(),
        },
    );
    match check {
        Ok(_) => {}
        Err(e @ CleanupError::NoRecipients) => {
            let _ = writeln!(err, "sendmail: {e}");
            return EX_USAGE;
        }
        Err(e) => {
            let _ = writeln!(err, "sendmail: {e}");
            return EX_DATAERR;
        }
    }
    let dropped = Dropped {
        sender: inv.sender.clone(),
        recipients: inv.recipients.clone(),
        extract: inv.extract,
        full_name: inv.full_name.clone(),
        body_8bit: inv.body_8bit,
        smtputf8: false,
        notify: inv.notify.clone(),
        envid: inv.envid.clone(),
        message,
    };
    match maildrop::write(dir, &dropped) {
        Ok(path) => {
            if inv.verbose {
                let _ = writeln!(
                    err,
                    "sendmail: queued in the maildrop as {}",
                    path.display()
                );
            }
            EX_OK
        }
        Err(MaildropError::Write { dir, source })
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            let _ = writeln!(
                err,
                "sendmail: not allowed to write to the maildrop {}: {source} (sendmail must be setgid to the local-submission group; see docs/local-submission.md)",
                dir.display()
            );
            EX_NOPERM
        }
        Err(e @ MaildropError::WorldWritable(_)) => {
            let _ = writeln!(err, "sendmail: {e}");
            EX_CONFIG
        }
        Err(e @ MaildropError::BadValue(_)) => {
            let _ = writeln!(err, "sendmail: {e}");
            EX_USAGE
        }
        Err(e) => {
            let _ = writeln!(err, "sendmail: {e}");
            EX_CANTCREAT
        }
    }
}

/// `-bs`: SMTP on standard input and output, as Postfix's `sendmail -bs` runs a
/// stand-alone smtpd: each message is checked and dropped in the maildrop like one read
/// with `-bm`, and `250` means it is there, durably. The session's own policy is the
/// daemon's, at pickup (this process cannot write the spool): so every recipient is
/// taken here, and what the policy refuses later comes back as a bounce.
fn smtp(
    settings: &Settings,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    const MAX_LINE: u64 = 2048;
    let Some(dir) = settings.maildrop() else {
        let _ = writeln!(out, "421 4.3.0 {}\r", SubmitRefusal::Off);
        let _ = writeln!(err, "sendmail: {}", SubmitRefusal::Off);
        return EX_UNAVAILABLE;
    };
    let (_, hostname) = settings.origin_and_hostname();
    let who = Submitter::from_uid(nix::unistd::getuid().as_raw());
    let limit = settings.message_size();
    let say = |out: &mut dyn Write, text: &str| -> bool {
        out.write_all(text.as_bytes()).is_ok()
            && out.write_all(b"\r\n").is_ok()
            && out.flush().is_ok()
    };
    if !say(out, &format!("220 {hostname} ESMTP mtad (sendmail -bs)")) {
        return EX_IOERR;
    }
    let mut sender: Option<String> = None;
    let mut recipients: Vec<String> = Vec::new();
    let mut body_8bit = None;
    let mut smtputf8 = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut *input).take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) => return EX_OK,
            Ok(_) => {}
            Err(e) => {
                let _ = writeln!(err, "sendmail: -bs: {e}");
                return EX_IOERR;
            }
        }
        if !line.ends_with(b"\n") {
            say(out, "500 5.5.2 Line too long");
            return EX_DATAERR;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (verb, arg) = text.split_once(' ').unwrap_or((text, ""));
        let reply = match verb.to_ascii_uppercase().as_str() {
            "HELO" => format!("250 {hostname}"),
            "EHLO" => format!(
                "250-{hostname}\r\n250-PIPELINING\r\n250-SIZE {limit}\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES"
            ),
            "NOOP" => "250 2.0.0 Ok".to_owned(),
            "RSET" => {
                (sender, body_8bit, smtputf8) = (None, None, false);
                recipients.clear();
                "250 2.0.0 Ok".to_owned()
            }
            "VRFY" => "252 2.0.0 Send some mail, I'll try my best".to_owned(),
            "QUIT" => {
                say(out, "221 2.0.0 Bye");
                return EX_OK;
            }
            "MAIL" if sender.is_some() => "503 5.5.1 Error: nested MAIL command".to_owned(),
            "MAIL" => match path_of(arg, "FROM:") {
                Some((path, params)) => {
                    let claimed = (!path.is_empty()).then_some(path.as_str());
                    match settings.may_submit(&who, claimed.or(Some(""))) {
                        Err(refusal) => format!("553 5.7.1 {refusal}"),
                        Ok(()) => {
                            let params = params.to_ascii_uppercase();
                            body_8bit = if params.contains("BODY=8BITMIME") {
                                Some(true)
                            } else if params.contains("BODY=7BIT") {
                                Some(false)
                            } else {
                                None
                            };
                            smtputf8 = params.contains("SMTPUTF8");
                            sender = Some(path);
                            "250 2.1.0 Ok".to_owned()
                        }
                    }
                }
                None => "501 5.5.4 Syntax: MAIL FROM:<address>".to_owned(),
            },
            "RCPT" if sender.is_none() => "503 5.5.1 Error: need MAIL command".to_owned(),
            "RCPT" if recipients.len() >= maildrop::MAX_RECIPIENTS => {
                "452 4.5.3 Error: too many recipients".to_owned()
            }
            "RCPT" => match path_of(arg, "TO:") {
                Some((path, _)) if !path.is_empty() => {
                    recipients.push(path);
                    "250 2.1.5 Ok".to_owned()
                }
                _ => "501 5.5.4 Syntax: RCPT TO:<address>".to_owned(),
            },
            "DATA" if recipients.is_empty() => "503 5.5.1 Error: need RCPT command".to_owned(),
            "DATA" => {
                if !say(out, "354 End data with <CR><LF>.<CR><LF>") {
                    return EX_IOERR;
                }
                let message = match read_data(input, limit) {
                    Ok(Some(m)) => m,
                    Ok(None) => {
                        say(out, "552 5.3.4 Error: message file too big");
                        (sender, body_8bit, smtputf8) = (None, None, false);
                        recipients.clear();
                        continue;
                    }
                    Err(e) => {
                        let _ = writeln!(err, "sendmail: -bs: {e}");
                        return EX_IOERR;
                    }
                };
                let dropped = Dropped {
                    sender: sender.take(),
                    recipients: std::mem::take(&mut recipients),
                    body_8bit: body_8bit.take(),
                    smtputf8: std::mem::take(&mut smtputf8),
                    message,
                    ..Dropped::default()
                };
                match maildrop::write(dir, &dropped) {
                    Ok(_) => "250 2.0.0 Ok: queued".to_owned(),
                    Err(e) => {
                        let _ = writeln!(err, "sendmail: -bs: {e}");
                        "451 4.3.0 Error: queue file write error".to_owned()
                    }
                }
            }
            _ => "502 5.5.2 Error: command not recognized".to_owned(),
        };
        if !say(out, &reply) {
            return EX_IOERR;
        }
    }
}

/// `FROM:<path> params` → (path, params); `None` when it is not that.
fn path_of(arg: &str, keyword: &str) -> Option<(String, String)> {
    let rest = arg.trim_start();
    if rest.len() < keyword.len() || !rest[..keyword.len()].eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = rest[keyword.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    let path = rest[..end].to_owned();
    if path.contains(['\r', '\n', '\0']) {
        return None;
    }
    Some((path, rest[end + 1..].trim().to_owned()))
}

/// DATA's lines up to the lone dot, dot-unstuffed; `None` when over `limit` (read to
/// its end all the same).
fn read_data(input: &mut dyn BufRead, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut message = Vec::new();
    let mut over = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        if (&mut *input).take(1 << 16).read_until(b'\n', &mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the input ended inside DATA",
            ));
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok((!over).then_some(message));
        }
        // RFC 5321 §4.5.2: a leading dot was added by the client
        let text = line.strip_prefix(b".").unwrap_or(&line);
        if message.len() as u64 + text.len() as u64 > limit {
            over = true;
            message.clear();
        }
        if !over {
            message.extend_from_slice(text);
        }
    }
}

enum ReadError {
    TooBig,
    Io(std::io::Error),
}

/// Standard input up to its end, or (without `-i`) up to a line that is a lone dot.
fn read_message(input: &mut dyn Read, ignore_dots: bool, limit: u64) -> Result<Vec<u8>, ReadError> {
    let mut all = Vec::new();
    input
        .take(limit.saturating_add(1))
        .read_to_end(&mut all)
        .map_err(ReadError::Io)?;
    if !ignore_dots {
        let mut start = 0;
        while start < all.len() {
            let end = memchr::memchr(b'\n', &all[start..]).map_or(all.len(), |i| start + i);
            let line = &all[start..end];
            if line == b"." || line == b".\r" {
                all.truncate(start);
                return Ok(all);
            }
            start = end + 1;
        }
    }
    if all.len() as u64 > limit {
        return Err(ReadError::TooBig);
    }
    Ok(all)
}

/// The whole configuration, or a word on `err` that `what` needs it.
fn full<'s>(
    settings: &'s Settings,
    what: &str,
    err: &mut dyn Write,
) -> Option<&'s (Config, crate::policy::Pipeline)> {
    match settings {
        Settings::Full(both) => Some(both),
        Settings::Light(_) => {
            let _ = writeln!(
                err,
                "sendmail: {what} needs to read the whole configuration (run it as root or mtad's user)"
            );
            None
        }
    }
}

/// `-bv`: each recipient as the policy would route it, nothing sent.
fn verify(inv: &Invocation, settings: &Settings, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let Some((_, pipeline)) = full(settings, "-bv", err) else {
        return EX_NOPERM;
    };
    if inv.recipients.is_empty() {
        let _ = writeln!(err, "sendmail: -bv: give the addresses to verify");
        return EX_USAGE;
    }
    let mut status = EX_OK;
    for written in &inv.recipients {
        let rcpt = match pipeline.recipient(written) {
            Ok(r) => r.address,
            Err(reply) => {
                let _ = writeln!(out, "{written}: undeliverable: {reply}");
                status = EX_DATAERR;
                continue;
            }
        };
        let finals = match pipeline.expand(&rcpt) {
            Ok(f) => f,
            Err(e) => {
                let _ = writeln!(out, "<{rcpt}>: deferred: {e}");
                status = EX_TEMPFAIL;
                continue;
            }
        };
        for f in finals {
            let ctx = crate::policy::Context {
                sender: Some(""),
                rcpt: Some(&f),
                ..crate::policy::Context::new(
                    std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                    crate::smtp::local::LISTENER,
                )
            };
            let via = if f == rcpt {
                String::new()
            } else {
                format!(" (via <{rcpt}>)")
            };
            match pipeline.route(&ctx) {
                crate::policy::Route::To {
                    transport, rule, ..
                } => {
                    let by = rule.map(|r| format!(", rule {r}")).unwrap_or_default();
                    let _ = writeln!(out, "<{f}>{via}: deliverable via {transport}{by}");
                }
                crate::policy::Route::Refused { reply, .. } => {
                    let _ = writeln!(out, "<{f}>{via}: undeliverable: {reply}");
                    status = EX_DATAERR;
                }
            }
        }
    }
    status
}

/// `-q`: every queued message attempted now, through the running mtad.
fn flush(config: &Path, err: &mut dyn Write) -> u8 {
    match super::queue_command(
        config,
        crate::control::socket::QueueAction::Flush,
        &["ALL".to_owned()],
        &[],
    ) {
        Ok(()) => EX_OK,
        Err(e) => {
            let _ = writeln!(err, "sendmail: -q: {e}");
            EX_UNAVAILABLE
        }
    }
}

/// `-bp` / `mailq`: [`super::mailq`]'s listing, with what waits in the maildrop first
/// and unmarked, as Postfix's showq lists its maildrop (the id is the drop file's name).
fn list(settings: &Settings, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let Some((config, _)) = full(settings, "mailq", err) else {
        return EX_NOPERM;
    };
    let mut entries = maildrop_entries(config);
    match super::mailq::entries(config) {
        Ok(spool) => entries.extend(spool),
        Err(e) => {
            let _ = writeln!(err, "mailq: {e}");
            return e.exit_code();
        }
    }
    match super::mailq::render_listing(&entries, &mut &mut *out) {
        Ok(()) => EX_OK,
        Err(e) => {
            let _ = writeln!(err, "mailq: {e}");
            EX_IOERR
        }
    }
}

/// The maildrop's complete files as `mailq` entries, oldest first.
fn maildrop_entries(config: &Config) -> Vec<super::mailq::Entry> {
    use super::mailq::{Entry, Pending, Queue};
    let Some(ls) = &config.local_submission else {
        return Vec::new();
    };
    let Ok(drop) = crate::queue::maildrop::Maildrop::open(&ls.maildrop, None) else {
        return Vec::new();
    };
    let limit = config.limits.message_size as u64;
    drop.scan()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| {
            let sub = drop.read(e.path(), limit).ok()?;
            let id = e.path().file_name()?.to_str()?.to_owned();
            let d = sub.dropped;
            Some(Entry {
                id,
                queue: Queue::Maildrop,
                size: d.message.len() as u64,
                arrival: sub.mtime,
                sender: d
                    .sender
                    .clone()
                    .unwrap_or_else(|| Submitter::from_uid(sub.uid).name()),
                recipients: d
                    .recipients
                    .iter()
                    .map(|r| Pending {
                        address: r.clone(),
                        reason: String::new(),
                    })
                    .collect(),
            })
        })
        .collect()
}

/// `-bi` / `newaliases`: [`super::newaliases::check_and_reload`], silent on success as
/// Postfix's is.
fn aliases(config: &Path, err: &mut dyn Write) -> u8 {
    let warn = |w: &str| eprintln!("newaliases: warning: {w}");
    match super::newaliases::check_and_reload(config, warn) {
        Ok(_) => EX_OK,
        Err(e) => {
            let _ = writeln!(err, "{e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, args: &[&str]) -> Invocation {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        Invocation::parse(name, &args).unwrap()
    }

    /// sendmail(1) is made from [`command`]; the parser is hand-written: they agree.
    #[test]
    fn the_documented_options_are_the_parsed_ones() {
        let cmd = command();
        for c in ('a'..='z').chain('A'..='Z') {
            let takes_value = WITH_VALUE.contains(c);
            let value = match c {
                'b' => "m",
                'B' => "7BIT",
                _ if takes_value => "x",
                _ => "",
            };
            let args = [OsString::from(format!("-{c}{value}"))];
            let known = match Invocation::parse("sendmail", &args) {
                Ok(i) => !i.warnings.iter().any(|w| w.contains("unknown")),
                Err(e) => panic!("-{c}{value}: {e}"),
            };
            let documented = cmd.get_arguments().find(|a| a.get_short() == Some(c));
            assert_eq!(
                documented.is_some(),
                known,
                "-{c}: in sendmail(1) or not, as parsed"
            );
            if let Some(arg) = documented {
                assert_eq!(
                    arg.get_action().takes_values(),
                    takes_value,
                    "-{c}: a value in sendmail(1) exactly when the parser takes one"
                );
            }
        }
    }

    #[test]
    fn the_command_lines_real_programs_use() {
        // Debian cron
        let i = parse(
            "sendmail",
            &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"],
        );
        assert_eq!(i.full_name.as_deref(), Some("CronDaemon"));
        assert!(i.ignore_dots && !i.extract);
        assert_eq!(i.body_8bit, Some(true));
        assert_eq!(i.recipients, ["root"]);
        assert!(i.warnings.is_empty());
        // cronie
        let i = parse(
            "sendmail",
            &["-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t"],
        );
        assert!(i.ignore_dots && i.extract && i.recipients.is_empty());
        // PHP, logwatch
        let i = parse("sendmail", &["-t", "-i"]);
        assert!(i.extract && i.ignore_dots);
        let i = parse("sendmail", &["-t"]);
        assert!(i.extract && !i.ignore_dots);
        // mdadm
        let i = parse("sendmail", &["-t", "-f", "mdadm@example.org"]);
        assert_eq!(i.sender.as_deref(), Some("mdadm@example.org"));
        // bsd-mailx, s-nail
        let i = parse("sendmail", &["-i", "--", "root", "-not-an-option@x.test"]);
        assert_eq!(i.recipients, ["root", "-not-an-option@x.test"]);
        // mailutils
        let i = parse("sendmail", &["-oi", "-f", "ADDR", "-t"]);
        assert_eq!(i.sender.as_deref(), Some("ADDR"));
        assert!(i.extract && i.ignore_dots);
        // PHP's fifth argument
        let i = parse("sendmail", &["-t", "-i", "-fbounce@example.org"]);
        assert_eq!(i.sender.as_deref(), Some("bounce@example.org"));
    }

    #[test]
    fn modes_and_names() {
        assert_eq!(parse("mailq", &[]).mode, Mode::List);
        assert_eq!(parse("newaliases", &[]).mode, Mode::Aliases);
        assert_eq!(parse("sendmail", &["-bp"]).mode, Mode::List);
        assert_eq!(parse("sendmail", &["-bi"]).mode, Mode::Aliases);
        assert_eq!(parse("sendmail", &["-I"]).mode, Mode::Aliases);
        assert_eq!(parse("sendmail", &["-bs"]).mode, Mode::Smtp);
        assert_eq!(parse("sendmail", &["-bv", "root"]).mode, Mode::Verify);
        assert_eq!(parse("sendmail", &["-q"]).mode, Mode::Flush);
        assert_eq!(parse("sendmail", &["-bm", "x"]).mode, Mode::Deliver);
        let i = parse(
            "sendmail",
            &[
                "-C",
                "/tmp/x.kdl",
                "-ti",
                "-N",
                "never",
                "-V",
                "env",
                "-R",
                "hdrs",
                "-v",
                "a",
            ],
        );
        assert_eq!(i.config, Some(PathBuf::from("/tmp/x.kdl")));
        assert!(i.extract && i.ignore_dots && i.verbose);
        assert_eq!(i.notify.as_deref(), Some("never"));
        assert_eq!(i.envid.as_deref(), Some("env"));
        assert_eq!(i.ret.as_deref(), Some("hdrs"));
        let i = parse("sendmail", &["-Z", "a, b"]);
        assert_eq!(i.warnings.len(), 1);
        assert_eq!(i.recipients, ["a", "b"]);
        let bad = Invocation::parse("sendmail", &[OsString::from("-f")]);
        assert!(bad.is_err());
        assert!(Invocation::parse("sendmail", &[OsString::from("-bd")]).is_err());
        assert!(Invocation::parse("sendmail", &[OsString::from("-Bwhat")]).is_err());
    }

    #[test]
    fn the_lone_dot() {
        let text = b"Subject: x\n\na\n.\nafter\n";
        let m = read_message(&mut &text[..], false, 1000).ok().unwrap();
        assert_eq!(m, b"Subject: x\n\na\n");
        let m = read_message(&mut &text[..], true, 1000).ok().unwrap();
        assert_eq!(m, text);
        let crlf = b"a\r\n.\r\nb";
        assert_eq!(
            read_message(&mut &crlf[..], false, 1000).ok().unwrap(),
            b"a\r\n"
        );
        let dots = b"..\n. \n";
        assert_eq!(
            read_message(&mut &dots[..], false, 1000).ok().unwrap(),
            dots
        );
        assert!(matches!(
            read_message(&mut &text[..], true, 5),
            Err(ReadError::TooBig)
        ));
    }
}
