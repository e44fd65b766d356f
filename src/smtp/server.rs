//! The listeners of a running server: bind every listening address, admit connections
//! within the limits, run a session for each, and on shutdown stop accepting and let
//! sessions finish up to the shutdown timeout. The daemon around them (spool,
//! scheduler, control socket, reload, signals) is wired in [`crate::control::daemon`].

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, info, info_span, warn};

use super::conn::LimitHit;
use super::session::{Session, next_session_id};
use super::shared::Refusal;
use super::{Core, Listen, proxy, reply};
use crate::config::Listener;
use crate::lookup::NetworkSet;

/// Pending connections the kernel may hold for each listener before we accept them.
const BACKLOG: u32 = 4096;

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
    /// Sockets bound before privileges were dropped, until `prepare` takes them.
    prebound: Mutex<Vec<(SocketAddr, TcpListener)>>,
}

/// An open listening socket.
struct Open {
    config: Listener,
    bound: SocketAddr,
    /// What its next connections run with; a reload puts in a new one.
    listen: Arc<ArcSwap<Listen>>,
    close: watch::Sender<bool>,
}

/// Listening sockets bound before the daemon gave up root ([`bind_all`]), each with the
/// address it was configured with; [`Listeners::prepare`] takes them instead of binding
/// anew.
pub struct Prebound(Vec<(SocketAddr, TcpListener)>);

/// Binds every listener of `wanted` now (as root, before the privileges are dropped:
/// ports below 1024 need it). Call within the runtime.
pub fn bind_all(wanted: &[Listener]) -> Result<Prebound, BindError> {
    let sockets = wanted
        .iter()
        .map(|l| Ok((l.address, bind_listener(l)?)))
        .collect::<Result<_, BindError>>()?;
    Ok(Prebound(sockets))
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
            prebound: Mutex::new(Vec::new()),
        }
    }

    /// Sockets bound earlier ([`bind_all`]): the next [`prepare`](Self::prepare) uses
    /// them for their addresses. Those still unused after it are closed.
    pub fn adopt(&self, prebound: Prebound) {
        *self.prebound.lock().unwrap_or_else(|e| e.into_inner()) = prebound.0;
    }

    /// Binds the listeners of `wanted` whose address is not open yet. Nothing changes
    /// until [`commit`](Self::commit); on an error the sockets bound so far close.
    pub fn prepare(&self, wanted: Vec<(Listener, Listen)>) -> Result<Prepared, BindError> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mut prebound =
            std::mem::take(&mut *self.prebound.lock().unwrap_or_else(|e| e.into_inner()));
        let mut prepared = Prepared {
            keep: Vec::new(),
            new: Vec::new(),
        };
        for (l, listen) in wanted {
            match open.iter().position(|o| o.config.address == l.address) {
                Some(i) => prepared.keep.push((i, l, listen)),
                None => {
                    if let Some(i) = prebound.iter().position(|(a, _)| *a == l.address) {
                        let (_, socket) = prebound.swap_remove(i);
                        prepared.new.push((l, listen, socket));
                        continue;
                    }
                    let socket = bind_listener(&l)?;
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
    pub async fn wait(&self) {
        loop {
            let mut loops =
                std::mem::take(&mut *self.loops.lock().unwrap_or_else(|e| e.into_inner()));
            if loops.is_empty() {
                return;
            }
            while loops.join_next().await.is_some() {}
        }
    }

    /// The listeners open now, with what their next connections run with (for status).
    pub fn open(&self) -> Vec<OpenListener> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.iter()
            .map(|o| {
                let listen = o.listen.load();
                OpenListener {
                    config: o.config.clone(),
                    bound: o.bound,
                    tls: listen.tls,
                    auth: listen.auth,
                }
            })
            .collect()
    }
}

/// A listener that is open, as [`Listeners::open`] describes it.
pub struct OpenListener {
    pub config: Listener,
    /// The address it is bound to (the configured one, with the port the kernel chose
    /// for port 0).
    pub bound: SocketAddr,
    pub tls: crate::config::ListenerTls,
    pub auth: crate::config::AuthMode,
}

/// A listener's address cannot be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} (listener \"{name}\"): {source}")]
pub struct BindError {
    pub name: String,
    pub address: SocketAddr,
    pub source: std::io::Error,
}

fn bind_listener(l: &Listener) -> Result<TcpListener, BindError> {
    bind(l.address).map_err(|source| BindError {
        name: l.name.clone(),
        address: l.address,
        source,
    })
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
    // `connections-per-ip` counts clients as the rate limits do (an IPv6 /64)
    let slot = match core
        .connections
        .try_acquire(core.rate.key(ip), &listen.settings.limits)
    {
        Ok(guard) => Ok(guard),
        Err(LimitHit::Total) => Err(("Error: too many connections", "connections in total")),
        Err(LimitHit::PerClient) => Err((
            "Error: too many connections from your address",
            "connections per client",
        )),
    };
    let (core, listen) = (core.clone(), listen.clone());
    // boxed: a session's future is about 12 KB, which tokio would otherwise copy on
    // every move of the task (spawn, completion)
    sessions.spawn(Box::pin(
        async move {
            let refusal = match slot {
                Err(refusal) => refusal,
                Ok(guard) => {
                    let mut seen = super::shared::Seen::default();
                    let per_client = listen.settings.limits.connections_per_ip;
                    match core.admit(ip, per_client, id, &mut seen).await {
                        Ok(admitted) => {
                            let mut session = Session::new(stream, core.clone(), peer, listen);
                            session.seen = seen;
                            session.ahead = admitted.ahead;
                            session.id = id;
                            let _slot = (guard, admitted.lease);
                            session.run().await;
                            return;
                        }
                        Err(Refusal::Rate) => (
                            "Error: too many connections from your address; try again later",
                            "rate limit: connections per window",
                        ),
                        Err(Refusal::PerClient) => (
                            "Error: too many connections from your address",
                            "connections per client, across the cluster",
                        ),
                        Err(Refusal::Unavailable) => (
                            "Error: temporary failure of the shared limits; try again later",
                            "cluster: Redis unavailable, fallback tempfail",
                        ),
                    }
                }
            };
            // refused: say why, close
            let (text, limit) = refusal;
            let enhanced = if limit.starts_with("cluster:") {
                reply::SYSTEM_TEMPORARY
            } else {
                reply::TOO_MANY_ERRORS
            };
            let reply = reply::closing(&listen.settings.hostname, enhanced, text);
            warn!(limit, "connection refused");
            let mut stream = stream;
            let write = async {
                stream.write_all(reply.as_bytes()).await?;
                stream.shutdown().await
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
        }
        .instrument(span),
    ));
}

/// IPv4 clients on a dual-stack socket arrive as `::ffff:a.b.c.d`; rules and limits see
/// the IPv4 address.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
