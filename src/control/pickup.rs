//! The pickup: takes what `sendmail` left in the maildrop and queues it, at once
//! when the daemon runs (inotify), at its start when it did not, and every minute in
//! any case (should a wake-up be missed).
//!
//! For each complete drop file: its owner is the submitter; [`accept_local`] checks
//! the submission policy again for that uid (`sendmail` checks it too, but the daemon
//! trusts only the file's owner) and makes the message what Postfix's cleanup makes
//! of local mail, with a new queue id; the file is claimed for that id; a session on the built-in
//! listener `sendmail` ([`crate::smtp::local`]) runs it through the policy and queues
//! it; the file is removed, and only then is the scheduler told. See
//! [`crate::queue::maildrop`] for why a crash anywhere in this neither loses nor
//! duplicates a message, and `docs/local-submission.md` for the security model.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::{Config, LocalSubmission};
use crate::logsafe::esc;
use crate::maillog::{Addr, Agent};
use crate::policy::local::{LocalMessage, LocalRefusal, Site, Submitter, accept_local};
use crate::queue::maildrop::{Entry, Maildrop, MaildropError};
use crate::queue::{QueueId, Spool};
use crate::smtp::local::{EVERY_REFUSED, Injected, Injection, inject};
use crate::smtp::{Core, Listen, Settings};

/// How often the maildrop is scanned when no wake-up came (Postfix's pickup: 60s).
const POLL: Duration = Duration::from_secs(60);
/// An incomplete drop file this old was abandoned by its writer: removed.
const ABANDONED: Duration = Duration::from_secs(24 * 3600);

/// Opens the maildrop of `settings` (creating it, mode 1730, group `group`).
pub fn open(settings: &LocalSubmission) -> Result<Maildrop, MaildropError> {
    let gid = match &settings.group {
        Some(name) => match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Some(g.gid.as_raw()),
            _ => {
                warn!(group = %name, "local-submission: no such group; the maildrop is created without it");
                None
            }
        },
        None => None,
    };
    Maildrop::open(&settings.maildrop, gid)
}

/// At start, before the scheduler runs: a file claimed by a pickup that was cut off
/// is removed if its message is in the spool, and given back otherwise.
pub fn recover(maildrop: &Maildrop, spool: &Spool) {
    let entries = match maildrop.scan() {
        Ok(e) => e,
        Err(err) => {
            error!(dir = %maildrop.dir().display(), %err, "cannot read the maildrop");
            return;
        }
    };
    for entry in entries {
        let Entry::Claimed(path, id) = entry else {
            continue;
        };
        let done = if spool.get(id).is_some() {
            info!(queue_id = %id, file = %path.display(), "maildrop: already queued; removing the file");
            maildrop.remove(std::slice::from_ref(&path))
        } else {
            info!(file = %path.display(), "maildrop: not queued before the stop; picking it up again");
            maildrop.unclaim(&path).map(|_| ())
        };
        if let Err(err) = done {
            error!(file = %path.display(), %err, "maildrop: cannot recover this file");
        }
    }
}

/// The running pickup.
pub struct Pickup {
    maildrop: Maildrop,
    core: Arc<Core>,
    listen: Arc<Listen>,
    /// Messages queued by the last injection and not held: the scheduler hears of
    /// them once their file is gone.
    ready: Arc<Mutex<Vec<QueueId>>>,
    notify: Box<dyn Fn(QueueId) + Send + Sync>,
    message_size: u64,
}

impl Pickup {
    /// A pickup sharing `main`'s policy (so reloads apply) and spool; `notify` tells
    /// the scheduler.
    pub fn new(
        config: &Config,
        main: &Core,
        maildrop: Maildrop,
        notify: Box<dyn Fn(QueueId) + Send + Sync>,
    ) -> Pickup {
        let ready = Arc::new(Mutex::new(Vec::new()));
        let mut core = Core::new(
            config,
            main.policy.load_full(),
            main.spool.clone(),
            main.resolver.clone(),
            main.shutdown.clone(),
        );
        core.policy = main.policy.clone();
        {
            let ready = ready.clone();
            core.on_queued = Box::new(move |id| {
                ready.lock().unwrap_or_else(|e| e.into_inner()).push(id);
            });
        }
        let settings = Arc::new(Settings::new(config));
        Pickup {
            maildrop,
            listen: Arc::new(crate::smtp::local::listen(settings, config)),
            core: Arc::new(core),
            ready,
            notify,
            message_size: config.limits.message_size as u64,
        }
    }

    /// Picks up until shutdown.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut wake = match Wake::new(self.maildrop.dir()) {
            Ok(w) => Some(w),
            Err(err) => {
                warn!(%err, "maildrop: no inotify; scanning every minute only");
                None
            }
        };
        loop {
            self.pass().await;
            let woken = async {
                match wake.as_mut() {
                    Some(w) => w.wait().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(POLL) => {}
                _ = woken => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// One scan: every new file, oldest first.
    async fn pass(&self) {
        let entries = match self.maildrop.scan() {
            Ok(e) => e,
            Err(err) => {
                error!(dir = %self.maildrop.dir().display(), %err, "cannot read the maildrop");
                return;
            }
        };
        for entry in entries {
            if let Entry::New(path) = entry {
                self.one(&path).await;
            }
        }
    }

    async fn one(&self, path: &Path) {
        let file = path.display().to_string();
        let submitted = match self.maildrop.read(path, self.message_size) {
            Ok(s) => s,
            Err(MaildropError::Incomplete) => {
                let old = std::fs::metadata(path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > ABANDONED);
                if old {
                    warn!(%file, "maildrop: removing a file its writer never finished");
                    let _ = self.maildrop.remove(&[path.to_path_buf()]);
                }
                return;
            }
            Err(MaildropError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return;
            }
            Err(err) => {
                warn!(%file, %err, "maildrop: not a message; removed");
                let _ = self.maildrop.remove(&[path.to_path_buf()]);
                return;
            }
        };
        let d = &submitted.dropped;
        let who = Submitter::from_uid(submitted.uid);
        let policy = self.core.policy.load_full();
        let id = self.core.spool.new_id();
        let now = chrono::Local::now().fixed_offset();
        let id_text = id.to_string();
        let accepted = accept_local(
            policy.local_submission(),
            &LocalMessage {
                submitter: &who,
                sender: d.sender.as_deref(),
                recipients: &d.recipients,
                extract: d.extract,
                full_name: d.full_name.as_deref(),
                body_8bit: d.body_8bit,
                smtputf8: d.smtputf8,
                message: &d.message,
            },
            &Site {
                origin: policy.origin(),
                hostname: &self.listen.settings.hostname,
                queue_id: &id_text,
                now,
            },
        );
        let cleaned = match accepted {
            Ok(c) => c,
            Err(refusal) => {
                let what = match refusal {
                    LocalRefusal::Submit(_) => "submission refused",
                    LocalRefusal::Cleanup(_) => "message refused",
                };
                warn!(%file, uid = submitted.uid, reason = %refusal, "maildrop: {what}; removed");
                let _ = self.maildrop.remove(&[path.to_path_buf()]);
                return;
            }
        };
        let claimed = match self.maildrop.claim(path, id) {
            Ok(c) => c,
            Err(err) => {
                error!(%file, %err, "maildrop: cannot claim the file; it stays");
                return;
            }
        };
        // as Postfix's pickup logs it, the sender as submitted: `ID: uid=0 from=<root>`
        let given = d.sender.clone().unwrap_or_else(|| who.name());
        crate::mail!(
            Agent::Pickup,
            INFO,
            "{id}: uid={} from=<{}>",
            submitted.uid,
            Addr(&given)
        );
        let injected = inject(
            self.core.clone(),
            self.listen.clone(),
            Injection {
                submitter: who.clone(),
                sender: &cleaned.sender,
                recipients: &cleaned.recipients,
                message: &cleaned.message,
                body_8bit: cleaned.body_8bit,
                smtputf8: cleaned.smtputf8,
                id,
            },
        )
        .await;
        let temporary = injected
            .failed
            .as_deref()
            .is_some_and(|f| !f.starts_with('5') && !injected.queued && f != EVERY_REFUSED);
        if temporary && injected.refused.iter().all(|(_, r)| !r.starts_with('5')) {
            warn!(queue_id = %id, reason = %esc(injected.failed.as_deref().unwrap_or("")), "maildrop: not queued now; trying again later");
            if let Err(err) = self.maildrop.unclaim(&claimed) {
                error!(file = %claimed.display(), %err, "maildrop: cannot give the file back");
            }
            self.ready.lock().unwrap_or_else(|e| e.into_inner()).clear();
            return;
        }
        if let Err(err) = self.maildrop.remove(std::slice::from_ref(&claimed)) {
            // the message is queued: at the next start `recover` removes the file
            error!(file = %claimed.display(), %err, "maildrop: cannot remove a picked-up file");
        }
        let ready: Vec<QueueId> =
            std::mem::take(&mut *self.ready.lock().unwrap_or_else(|e| e.into_inner()));
        for id in ready {
            (self.notify)(id);
        }
        self.bounce(&cleaned.sender, id, &injected, &who).await;
    }

    /// What policy refused goes back to the sender, as Postfix would bounce it (the
    /// submitter's `sendmail` had already exited 0).
    async fn bounce(&self, sender: &str, id: QueueId, injected: &Injected, who: &Submitter) {
        let mut lines = Vec::new();
        for (rcpt, reply) in &injected.refused {
            warn!(queue_id = %id, to = %format!("<{}>", esc(rcpt)), reply = %esc(reply), "maildrop: recipient refused by policy");
            lines.push(format!("<{rcpt}>: {reply}"));
        }
        if !injected.queued
            && let Some(f) = &injected.failed
            && f != EVERY_REFUSED
        {
            warn!(queue_id = %id, reply = %esc(f), "maildrop: message refused by policy");
            lines.push(format!("the message: {f}"));
        }
        if lines.is_empty() || sender.is_empty() {
            return;
        }
        let hostname = &self.listen.settings.hostname;
        let text = format!(
            "From: MAILER-DAEMON@{hostname} (Mail Delivery System)\r\nTo: <{sender}>\r\n\
             Subject: Undelivered Mail Returned to Sender\r\nAuto-Submitted: auto-replied\r\n\
             Date: {}\r\nMessage-ID: <{}.bounce.{id}@{hostname}>\r\n\r\n\
             This is the mail system at host {hostname}.\r\n\r\n\
             Your message {id} was not accepted for these recipients:\r\n\r\n{}\r\n",
            chrono::Local::now().format("%a, %e %b %Y %H:%M:%S %z"),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            lines.join("\r\n")
        );
        let recipients = [sender.to_owned()];
        let bounce_id = self.core.spool.new_id();
        let sent = inject(
            self.core.clone(),
            self.listen.clone(),
            Injection {
                submitter: who.clone(),
                sender: "",
                recipients: &recipients,
                message: text.as_bytes(),
                body_8bit: false,
                smtputf8: !sender.is_ascii(),
                id: bounce_id,
            },
        )
        .await;
        for id in std::mem::take(&mut *self.ready.lock().unwrap_or_else(|e| e.into_inner())) {
            (self.notify)(id);
        }
        if !sent.queued {
            warn!(queue_id = %id, "maildrop: the bounce to the sender was refused too");
        }
    }
}

/// inotify on the maildrop (a file closed after writing, or moved in), read by a
/// thread that wakes the pickup; it stops within a second of the pickup's end.
struct Wake {
    woken: Arc<tokio::sync::Notify>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Wake {
    fn new(dir: &Path) -> nix::Result<Wake> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        use std::os::fd::AsFd;
        use std::sync::atomic::Ordering;
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        inotify.add_watch(
            dir,
            AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MOVED_TO,
        )?;
        let woken = Arc::new(tokio::sync::Notify::new());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (w, s) = (woken.clone(), stop.clone());
        std::thread::Builder::new()
            .name("maildrop-inotify".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
                    match poll(&mut fds, PollTimeout::from(1000u16)) {
                        Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                        Ok(_) => {}
                        Err(_) => return,
                    }
                    let mut got = false;
                    while let Ok(events) = inotify.read_events() {
                        if events.is_empty() {
                            break;
                        }
                        got = true;
                    }
                    if got {
                        w.notify_one();
                    }
                }
            })
            .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EIO)))?;
        Ok(Wake { woken, stop })
    }

    /// Until a file arrives (or arrived since the last call).
    async fn wait(&mut self) {
        self.woken.notified().await;
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
