//! Running the server: open the spool, bind every listener, admit connections within
//! the limits, and on SIGTERM/SIGINT stop accepting, let sessions finish up to the
//! shutdown timeout, close the spool and return.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, error, info, info_span, warn};

use super::conn::LimitHit;
use super::reload::Reloader;
use super::session::{Session, next_session_id};
use super::{Core, Listen, proxy, reply};
use crate::config::{Config, Listener};
use crate::control::socket::ControlSocket;
use crate::control::status::{ListenerSource, ListenerStatus, Observer};
use crate::delivery::dns::Resolver;
use crate::delivery::hops::Outbound;
use crate::delivery::scheduler::Scheduler;
use crate::delivery::tls::TlsClient;
use crate::lookup::NetworkSet;
use crate::policy::Pipeline;
use crate::queue::{Spool, SpoolError};

/// Pending connections the kernel may hold for each listener before we accept them.
const BACKLOG: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {address} (listener \"{name}\"): {source}")]
    Bind {
        name: String,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the spool: {0}")]
    Spool(#[from] SpoolError),
    #[error("cannot use the TLS certificate of {0}")]
    Tls(String),
    #[error("cannot set up DNS resolution: {0}")]
    Resolver(String),
    #[error("cannot open the control socket {}: {source}", path.display())]
    Control {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot serve metrics on {address}: {source}")]
    Metrics {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// Runs until SIGTERM or SIGINT, then shuts down gracefully. `pipeline` is the
/// policy compiled from `config` ([`Pipeline::build`]).
pub async fn serve(config: Config, pipeline: Pipeline) -> Result<(), ServeError> {
    let (stop, stopped) = watch::channel(false);
    let signals = tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop.send(true);
    });
    let result = serve_until(config, pipeline, stopped).await;
    signals.abort();
    result
}

/// Runs until `shutdown` turns true (the signal handler in [`serve`], or a test).
pub async fn serve_until(
    config: Config,
    pipeline: Pipeline,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    raise_open_files_limit();
    let spool_dir = config.server.spool.clone();
    let (spool, recovery) = tokio::task::spawn_blocking(move || Spool::open(&spool_dir))
        .await
        .expect("spool open task")?;
    info!(
        spool = %config.server.spool.display(),
        messages = recovery.messages,
        segments = recovery.segments,
        discarded_incomplete = recovery.discarded_tails,
        "spool opened"
    );
    match start(config, pipeline, spool.clone(), shutdown).await {
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
    pipeline: Pipeline,
    spool: Spool,
    shutdown: watch::Receiver<bool>,
) -> Result<impl Future<Output = ()>, ServeError> {
    let listens = Listen::all(&config).map_err(ServeError::Tls)?;
    let outbound = Arc::new(ArcSwap::from_pointee(outbound(&config)?));
    let mut core = Core::new(
        &config,
        pipeline,
        spool.clone(),
        outbound.clone(),
        shutdown.clone(),
    );
    let grace = config.server.shutdown_timeout;
    if let Err(err) = std::fs::create_dir_all(&config.delivery.local_base) {
        warn!(path = %config.delivery.local_base.display(), %err, "cannot create the Maildir base of the local transport; local deliveries will be deferred");
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
    let core = Arc::new(core);
    let listeners = Arc::new(Listeners::new(core.clone(), shutdown.clone(), grace));
    let bound = listeners.prepare(listens)?;
    let observer = Arc::new(Observer::new(
        core.policy.clone(),
        spool.clone(),
        listeners.clone(),
    ));
    let metrics = metrics.map(|m| tokio::spawn(m.serve(observer.metrics_fn(), shutdown.clone())));
    let reloader = Arc::new(Reloader::new(
        &config,
        core.clone(),
        listeners.clone(),
        outbound,
    ));
    let control = control
        .with_reload(reloader.clone().answer())
        .with_status(observer.status_fn());
    let control = tokio::spawn(control.serve(spool, Arc::new(handle), shutdown.clone()));
    let watcher = tokio::spawn(reloader.clone().watch_files(shutdown.clone()));
    let reloads = tokio::spawn(reload_on_sighup(reloader, shutdown.clone()));
    let scheduler = tokio::spawn(scheduler.run(shutdown.clone(), grace));
    listeners.commit(bound);
    info!(hostname = %config.server.hostname, revision = %core.policy.load().revision(), "mtad started");
    Ok(async move {
        listeners.wait().await;
        reloads.abort();
        watcher.abort();
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
    Ok(Outbound::new(
        resolver,
        config.delivery.clone(),
        config.server.hostname.clone(),
        tls,
        config.credentials.clone(),
    )
    .with_listeners(config.listeners.iter().map(|l| l.address)))
}

/// The listening sockets of a running server, one per address: bound at start, and
/// bound, updated or closed by a reload. Closing a listener stops its accepting; its
/// sessions go on to their end.
pub struct Listeners {
    core: Arc<Core>,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
    open: Mutex<Vec<Open>>,
    /// Every accept loop, also those a reload closed that still have sessions.
    loops: Mutex<JoinSet<()>>,
}

/// An open listening socket.
struct Open {
    config: Listener,
    bound: SocketAddr,
    /// What its next connections run with; a reload puts in a new one.
    listen: Arc<ArcSwap<Listen>>,
    close: watch::Sender<bool>,
}

/// What [`Listeners::prepare`] made ready: sockets bound, nothing changed yet.
pub struct Prepared {
    keep: Vec<(usize, Listener, Listen)>,
    new: Vec<(Listener, Listen, TcpListener)>,
}

impl Listeners {
    pub fn new(core: Arc<Core>, shutdown: watch::Receiver<bool>, grace: Duration) -> Self {
        Self {
            core,
            shutdown,
            grace,
            open: Mutex::new(Vec::new()),
            loops: Mutex::new(JoinSet::new()),
        }
    }

    /// Binds the listeners of `wanted` whose address is not open yet. Nothing changes
    /// until [`commit`](Self::commit); on an error the sockets bound so far close.
    pub fn prepare(&self, wanted: Vec<(Listener, Listen)>) -> Result<Prepared, ServeError> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mut prepared = Prepared {
            keep: Vec::new(),
            new: Vec::new(),
        };
        for (l, listen) in wanted {
            match open.iter().position(|o| o.config.address == l.address) {
                Some(i) => prepared.keep.push((i, l, listen)),
                None => {
                    let socket = bind(l.address).map_err(|source| ServeError::Bind {
                        name: l.name.clone(),
                        address: l.address,
                        source,
                    })?;
                    prepared.new.push((l, listen, socket));
                }
            }
        }
        Ok(prepared)
    }

    /// Puts `prepared` in force: listeners kept take their new settings for their next
    /// connections, listeners no longer configured stop accepting, new ones start.
    pub fn commit(&self, prepared: Prepared) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mut loops = self.loops.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = Vec::with_capacity(prepared.keep.len() + prepared.new.len());
        let mut kept = vec![false; open.len()];
        let mut old: Vec<Option<Open>> = open.drain(..).map(Some).collect();
        for (i, l, listen) in prepared.keep {
            let Some(mut o) = old[i].take() else { continue };
            kept[i] = true;
            if o.config != l {
                info!(listener = %l.name, address = %o.bound, "listener changed; new connections use its new settings");
            }
            o.listen.store(Arc::new(listen));
            o.config = l;
            next.push(o);
        }
        for o in old.into_iter().flatten() {
            info!(listener = %o.config.name, address = %o.bound, "listener removed; no new connections, its sessions go on");
            let _ = o.close.send(true);
        }
        for (l, listen, socket) in prepared.new {
            let bound = socket.local_addr().unwrap_or(l.address);
            info!(listener = %l.name, address = %bound, proxy_protocol = listen.proxies.is_some(), tls = listen.tls.as_str(), auth = ?l.auth, "listening");
            let listen = Arc::new(ArcSwap::from_pointee(listen));
            let (close, closed) = watch::channel(false);
            loops.spawn(accept_loop(
                socket,
                listen.clone(),
                self.core.clone(),
                self.shutdown.clone(),
                closed,
                self.grace,
            ));
            next.push(Open {
                config: l,
                bound,
                listen,
                close,
            });
        }
        *open = next;
    }

    /// Waits for every accept loop to end (after shutdown, once their sessions have).
    async fn wait(&self) {
        loop {
            let mut loops =
                std::mem::take(&mut *self.loops.lock().unwrap_or_else(|e| e.into_inner()));
            if loops.is_empty() {
                return;
            }
            while loops.join_next().await.is_some() {}
        }
    }
}

impl ListenerSource for Listeners {
    fn listeners(&self) -> Vec<ListenerStatus> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.iter()
            .map(|o| {
                let listen = o.listen.load();
                ListenerStatus::new(&o.config, o.bound, listen.tls, listen.auth)
            })
            .collect()
    }
}

fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(BACKLOG)
}

async fn accept_loop(
    listener: TcpListener,
    slot: Arc<ArcSwap<Listen>>,
    core: Arc<Core>,
    mut shutdown: watch::Receiver<bool>,
    mut close: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut sessions = JoinSet::new();
    let closed = loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let listen = slot.load_full();
                    match listen.proxies.clone() {
                        None => admit(&mut sessions, stream, peer, &listen, &core),
                        Some(proxies) => {
                            let id = next_session_id();
                            let span = info_span!("proxy", id = %format_args!("{id:x}"), proxy = %peer, listener = %listen.name);
                            let core = core.clone();
                            sessions.spawn(
                                async move {
                                    proxied(stream, peer, listen, core, proxies).await;
                                }
                                .instrument(span),
                            );
                        }
                    }
                }
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(listener = %slot.load().name, %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            _ = shutdown.changed() => break false,
            _ = close.changed() => break true,
        }
    };
    drop(listener);
    let name = slot.load().name.clone();
    if closed {
        // closed by a reload: the sessions end in their own time, unless the server stops
        loop {
            tokio::select! {
                next = sessions.join_next() => if next.is_none() { return },
                _ = shutdown.changed() => break,
            }
        }
    }
    info!(listener = %name, sessions = sessions.len(), "stopped accepting; waiting for sessions");
    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = sessions.join_next() => if next.is_none() { break },
            _ = &mut deadline => {
                warn!(listener = %name, sessions = sessions.len(), "shutdown timeout: closing the remaining sessions");
                sessions.abort_all();
                while sessions.join_next().await.is_some() {}
                break;
            }
        }
    }
}

/// A connection on a PROXY protocol listener: only from a configured proxy, and only
/// with a valid header, which names the client the session then runs as. Anything
/// else is closed without a banner. The proxy's own address never becomes the client.
async fn proxied(
    mut stream: TcpStream,
    peer: SocketAddr,
    listen: Arc<Listen>,
    core: Arc<Core>,
    proxies: Arc<NetworkSet>,
) {
    if !proxies.contains(canonical_ip(peer.ip())) {
        warn!(
            "connection to a PROXY protocol listener from an address that is not a configured proxy; closed"
        );
        return;
    }
    let client = match proxy::read_header(&mut stream).await {
        Ok(p) => p.address(),
        Err(err) => {
            warn!(%err, "closed without a banner");
            return;
        }
    };
    let client = SocketAddr::new(canonical_ip(client.ip()), client.port());
    info!(%client, "PROXY protocol header");
    let mut sessions = JoinSet::new();
    admit(&mut sessions, stream, client, &listen, &core);
    while sessions.join_next().await.is_some() {}
}

fn admit(
    sessions: &mut JoinSet<()>,
    stream: TcpStream,
    peer: SocketAddr,
    listen: &Arc<Listen>,
    core: &Arc<Core>,
) {
    let name = &listen.name;
    let _ = stream.set_nodelay(true);
    let ip = canonical_ip(peer.ip());
    let peer = SocketAddr::new(ip, peer.port());
    let id = next_session_id();
    let span =
        info_span!("session", id = %format_args!("{id:x}"), client = %peer, listener = %name);
    let refusal = if core.rate.allow(super::rate::Kind::Connections, ip) {
        // `connections-per-ip` counts clients as the rate limits do (an IPv6 /64)
        match core
            .connections
            .try_acquire(core.rate.key(ip), &listen.settings.limits)
        {
            Ok(guard) => {
                let session = Session::new(stream, core.clone(), peer, listen.clone());
                sessions.spawn(
                    async move {
                        let _slot = guard;
                        session.run().await;
                    }
                    .instrument(span),
                );
                return;
            }
            Err(LimitHit::Total) => ("Error: too many connections", "connections in total"),
            Err(LimitHit::PerClient) => (
                "Error: too many connections from your address",
                "connections per client",
            ),
        }
    } else {
        (
            "Error: too many connections from your address; try again later",
            "rate limit: connections per window",
        )
    };
    // refused: say why, close
    let (text, limit) = refusal;
    let reply = reply::closing(&listen.settings.hostname, reply::TOO_MANY_ERRORS, text);
    sessions.spawn(
        async move {
            warn!(limit, "connection refused");
            let mut stream = stream;
            let write = async {
                stream.write_all(reply.as_bytes()).await?;
                stream.shutdown().await
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
        }
        .instrument(span),
    );
}

/// IPv4 clients on a dual-stack socket arrive as `::ffff:a.b.c.d`; rules and limits see
/// the IPv4 address.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
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
