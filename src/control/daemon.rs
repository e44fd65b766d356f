//! The daemon: the composition root that wires mtad's parts together and runs them.
//!
//! [`serve`] opens the spool, builds the delivery side (`outbound`), the session
//! core, the listeners, the scheduler, the control socket, the metrics endpoint and the
//! reloader, then runs until SIGTERM or SIGINT: listeners stop accepting, sessions
//! finish up to the shutdown timeout, the spool is closed. smtp and delivery never meet
//! except through the queue and what is wired here.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::notify;
use super::privileges::{self, PrivilegeError};
use super::reload::Reloader;
use super::socket::ControlSocket;
use super::status::{ListenerSource, ListenerStatus, Observer};
use crate::config::Config;
use crate::delivery::hops::Outbound;
use crate::delivery::scheduler::Scheduler;
use crate::delivery::tls::TlsClient;
use crate::net::dns::Resolver;
use crate::policy::Pipeline;
use crate::queue::{Spool, SpoolError};
use crate::smtp::server::{BindError, Listeners, Prebound};
use crate::smtp::{Core, Listen};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("cannot open the spool: {0}")]
    Spool(#[from] SpoolError),
    #[error("cannot use the TLS certificate of {0}")]
    Tls(#[from] crate::smtp::tls::ListenerTlsError),
    #[error("cannot set up DNS resolution: {0}")]
    Resolver(String),
    #[error("cannot open the control socket {}: {source}", path.display())]
    Control {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("local-submission: {0}")]
    Maildrop(#[from] crate::queue::maildrop::MaildropError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("cannot serve metrics on {address}: {source}")]
    Metrics {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Runs until SIGTERM or SIGINT, then shuts down gracefully. `pipeline` is the
/// policy compiled from `config` ([`Pipeline::build`]). First settles who runs it
/// ([`privileges::enter`]: root binds the ports and becomes `server { user }`; root
/// without it is refused unless `allow_root`). systemd hears `READY=1` once mail is
/// accepted and `STOPPING=1` at the signal ([`notify`]).
pub async fn serve(
    config: Config,
    pipeline: impl Into<Arc<Pipeline>>,
    allow_root: bool,
) -> Result<(), ServeError> {
    raise_open_files_limit();
    let entered = privileges::enter(&config, allow_root)?;
    let (stop, stopped) = watch::channel(false);
    let signals = tokio::spawn(async move {
        wait_for_signal().await;
        notify::stopping();
        let _ = stop.send(true);
    });
    let result = serve_until(config, pipeline, stopped, entered.prebound).await;
    signals.abort();
    result
}

/// Runs until `shutdown` turns true (the signal handler in [`serve`], or a test);
/// `prebound` holds listeners bound before privileges were dropped.
pub async fn serve_until(
    config: Config,
    pipeline: impl Into<Arc<Pipeline>>,
    shutdown: watch::Receiver<bool>,
    prebound: Option<Prebound>,
) -> Result<(), ServeError> {
    let spool_dir = config.server.spool.clone();
    let (spool, recovery) = tokio::task::spawn_blocking(move || Spool::open(&spool_dir))
        .await
        .expect("spool open task")?;
    info!(
        spool = %config.server.spool.display(),
        messages = recovery.messages,
        segments = recovery.segments,
        discarded_incomplete = recovery.discarded_tails,
        moved_to_corrupt = recovery.damaged,
        "spool opened"
    );
    // before the scheduler runs: a pickup cut off by a crash is finished or undone
    let maildrop = match &config.local_submission {
        Some(settings) => match super::pickup::open(settings) {
            Ok(m) => {
                super::pickup::recover(&m, &spool);
                Some(m)
            }
            Err(err) => {
                spool.close();
                return Err(err.into());
            }
        },
        None => None,
    };
    match start(
        config,
        pipeline,
        spool.clone(),
        maildrop,
        shutdown,
        prebound,
    )
    .await
    {
        Ok(running) => running.await,
        Err(err) => {
            spool.close();
            return Err(err);
        }
    }
    tokio::task::spawn_blocking(move || spool.close())
        .await
        .expect("spool close task");
    info!("mtad stopped");
    Ok(())
}

/// Binds the listeners and the control socket and starts the scheduler; the future
/// returned runs until shutdown and every task has finished.
async fn start(
    config: Config,
    pipeline: impl Into<Arc<Pipeline>>,
    spool: Spool,
    maildrop: Option<crate::queue::maildrop::Maildrop>,
    shutdown: watch::Receiver<bool>,
    prebound: Option<Prebound>,
) -> Result<impl Future<Output = ()>, ServeError> {
    let listens = Listen::all(&config).map_err(ServeError::Tls)?;
    let outbound = Arc::new(ArcSwap::from_pointee(outbound(&config)?));
    let resolver = Arc::new(ArcSwap::from_pointee(outbound.load().resolver().clone()));
    let mut core = Core::new(&config, pipeline, spool.clone(), resolver, shutdown.clone());
    let grace = config.server.shutdown_timeout;
    if let Err(err) = std::fs::create_dir_all(&config.delivery.local_base) {
        warn!(path = %config.delivery.local_base.display(), %err, "cannot create the Maildir base of the local transport; local deliveries will be deferred");
    }
    // every decision of a session or a local submission, from the first on
    match crate::policy::decision_log::install(&config.decision_log) {
        Ok(()) => {}
        Err(err) => {
            warn!(%err, "cannot open the decision log; decisions are not written")
        }
    }
    // the cluster's client, before the scheduler: the content-filter loop record it
    // writes is in Redis then
    let cluster = match &config.cluster {
        Some(settings) => Some(Arc::new(crate::cluster::Cluster::new(settings)?)),
        None => None,
    };
    if let Some(cluster) = &cluster {
        core.filter_loops = Arc::new(crate::cluster::filter_loops::FilterLoops::shared(
            cluster.clone(),
        ));
    }
    let (scheduler, handle) = Scheduler::new(
        spool.clone(),
        core.policy.clone(),
        outbound.clone(),
        config.server.hostname.clone(),
        core.filter_loops.clone(),
    );
    let control = ControlSocket::bind(&config.server.control_socket).map_err(|source| {
        ServeError::Control {
            path: config.server.control_socket.clone(),
            source,
        }
    })?;
    let metrics = match config.server.metrics {
        Some(address) => Some(
            crate::metrics::http::Endpoint::bind(address)
                .await
                .map_err(|source| ServeError::Metrics { address, source })?,
        ),
        None => None,
    };
    {
        let handle = handle.clone();
        core.on_queued = Box::new(move |id| handle.queued(id));
    }
    let pickup = maildrop.map(|m| {
        let handle = handle.clone();
        super::pickup::Pickup::new(&config, &core, m, Box::new(move |id| handle.queued(id)))
    });
    // greylisting's state: under the spool (saved every few seconds and at shutdown),
    // and in the cluster's Redis when there is one (the local state is its fallback)
    let greylist_local = {
        let path = config.server.spool.join("greylist");
        let local =
            tokio::task::spawn_blocking(move || crate::policy::greylist::Local::open(&path))
                .await
                .map(Arc::new)
                .unwrap_or_default();
        tokio::spawn(
            local
                .clone()
                .keep_saved(GREYLIST_SAVE_INTERVAL, shutdown.clone()),
        );
        local
    };
    core.greylist = greylist_local.clone();
    if let Some(cluster) = cluster {
        let settings = cluster.settings();
        info!(redis = %settings.redis_shown(), node = %settings.node, "cluster: limits, greylisting and the content-filter loop record shared through Redis");
        tokio::spawn({
            let cluster = cluster.clone();
            let shutdown = shutdown.clone();
            async move { cluster.renew_leases(shutdown).await }
        });
        tokio::spawn({
            let cluster = cluster.clone();
            let shutdown = shutdown.clone();
            async move { cluster.flush_pending(shutdown).await }
        });
        core.greylist = Arc::new(crate::policy::greylist::Shared {
            cluster: cluster.clone(),
            local: greylist_local,
            ahead: Default::default(),
            passed: Default::default(),
        });
        core.cluster = Some(cluster);
    }
    let core = Arc::new(core);
    let listeners = Arc::new(Listeners::new(core.clone(), shutdown.clone(), grace));
    if let Some(prebound) = prebound {
        listeners.adopt(prebound);
    }
    let bound = listeners.prepare(listens)?;
    let observer = Arc::new(Observer::new(
        core.policy.clone(),
        spool.clone(),
        listeners.clone(),
    ));
    let metrics = metrics.map(|m| tokio::spawn(m.serve(observer.metrics_fn(), shutdown.clone())));
    let reporter = Arc::new(crate::delivery::tls_rpt::report::Reporter::new(
        spool.clone(),
        handle.clone(),
        outbound.clone(),
        config.server.hostname.clone(),
    ));
    let reports = tokio::spawn(reporter.clone().run(shutdown.clone()));
    let reloader = Arc::new(Reloader::new(
        &config,
        core.clone(),
        listeners.clone(),
        outbound,
    ));
    let control = control
        .with_reload(reloader.clone().answer())
        .with_status(observer.status_fn())
        .with_tls_report(reporter);
    let control = tokio::spawn(control.serve(spool, Arc::new(handle), shutdown.clone()));
    let watcher = tokio::spawn(reloader.clone().watch_files(shutdown.clone()));
    let reloads = tokio::spawn(reload_on_sighup(reloader, shutdown.clone()));
    let scheduler = tokio::spawn(scheduler.run(shutdown.clone(), grace));
    let pickup = pickup.map(|p| tokio::spawn(p.run(shutdown.clone())));
    listeners.commit(bound);
    // heartbeats once the listeners are bound (their addresses are in it)
    if let Some(cluster) = core.cluster.clone() {
        tokio::spawn(super::cluster_status::heartbeats(
            cluster,
            observer.clone(),
            config.server.hostname.clone(),
            shutdown.clone(),
        ));
    }
    let revision = core.policy.load().revision().to_string();
    info!(hostname = %config.server.hostname, %revision, "mtad started");
    notify::ready(&format!("accepting mail; policy revision {revision}"));
    Ok(async move {
        listeners.wait().await;
        if let Some(pickup) = pickup {
            let _ = pickup.await;
        }
        reloads.abort();
        watcher.abort();
        reports.abort();
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        if let Err(err) = scheduler.await {
            error!(%err, "the scheduler task failed");
        }
        match control.await {
            Ok(Err(err)) => error!(%err, "control socket"),
            Err(err) => error!(%err, "the control socket task failed"),
            Ok(Ok(())) => {}
        }
    })
}

/// How often the greylisting state in this process is saved under the spool (a crash
/// forgets at most this much: those triplets are greylisted once more).
const GREYLIST_SAVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The delivery side as `config` describes it (at start, and anew at each reload: the
/// system's trust anchors and the CA file are read again).
pub(crate) fn outbound(config: &Config) -> Result<Outbound, ServeError> {
    let resolver = match config.delivery.dns_server {
        Some(addr) => Resolver::with_nameserver(addr),
        None => Resolver::system().map_err(|err| ServeError::Resolver(err.to_string()))?,
    };
    let tls = match TlsClient::new(config.delivery.tls_ca_file.as_deref()) {
        Ok(t) => Some(Arc::new(t)),
        Err(err) => {
            error!(%err, "client TLS is unavailable; routes that need TLS will be deferred");
            None
        }
    };
    // DNSSEC for DANE (a route hook may ask for `dane` at any time; building the
    // resolver sends nothing).
    let dnssec = match crate::net::dnssec::Dnssec::new(
        config.delivery.dns_server,
        config.delivery.dnssec_trust_anchors.as_deref(),
        std::time::Duration::from_secs(5),
    ) {
        Ok(d) => Some(d),
        Err(err) => {
            error!(%err, "DNSSEC is unavailable: `dane` destinations get opportunistic TLS, `dane-only` ones are deferred");
            None
        }
    };
    // MTA-STS: policies cached under the spool, fetched with the verifying TLS
    // configuration (system roots and tls-ca-file)
    let mta_sts = match (&tls, config.delivery.mta_sts) {
        (Some(t), true) => t
            .config_for(crate::delivery::TlsMode::Verify)
            .map(|verifying| {
                Arc::new(crate::delivery::mta_sts::MtaSts::new(
                    config.server.spool.join("mta-sts"),
                    resolver.clone(),
                    verifying,
                    config.delivery.mta_sts_port,
                ))
            }),
        _ => None,
    };
    // TLS reports: one store under the spool, shared by the configurations a reload
    // swaps in
    let tls_rpt = if config.delivery.tls_rpt {
        let limits = crate::delivery::tls_rpt::store::Limits {
            domains: config.delivery.tls_rpt_max_domains,
            details: config.delivery.tls_rpt_max_failures,
        };
        let dir = config.server.spool.join("tls-rpt");
        match crate::delivery::tls_rpt::store::Store::shared(&dir, limits) {
            Ok(s) => Some(s),
            Err(err) => {
                error!(%err, dir = %dir.display(), "TLS reporting is unavailable: its store cannot be opened");
                None
            }
        }
    } else {
        None
    };
    Ok(Outbound::new(
        resolver,
        config.delivery.clone(),
        config.server.hostname.clone(),
        tls,
        config.credentials.clone(),
    )
    .with_dnssec(dnssec)
    .with_mta_sts(mta_sts)
    .with_tls_rpt(tls_rpt)
    .with_listeners(config.listeners.iter().map(|l| l.address)))
}

impl ListenerSource for Listeners {
    fn listeners(&self) -> Vec<ListenerStatus> {
        self.open()
            .iter()
            .map(|o| ListenerStatus::new(&o.config, o.bound, o.tls, o.auth))
            .collect()
    }
}

/// SIGHUP reloads the policy (see [`Reloader`]), one reload at a time, until shutdown.
async fn reload_on_sighup(reloader: Arc<Reloader>, mut shutdown: watch::Receiver<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(err) => {
            error!(%err, "cannot install the SIGHUP handler; reloads are unavailable");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            got = hup.recv() => {
                if got.is_none() {
                    return;
                }
                info!(signal = "SIGHUP", "reloading the policy");
                let r = reloader.clone();
                if let Err(err) = tokio::task::spawn_blocking(move || r.reload()).await {
                    error!(%err, "the reload task failed; the running policy stays");
                }
            }
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(err) => {
            error!(%err, "cannot install the SIGTERM handler");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => info!(signal = "SIGTERM", "shutting down"),
        _ = tokio::signal::ctrl_c() => info!(signal = "SIGINT", "shutting down"),
    }
}

/// Each connection is a file descriptor; the usual soft limit of 1024 would cap the
/// server far below `limits.connections`. Raise the soft limit to the hard limit.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        warn!(%err, "cannot raise the open files limit");
    }
}
