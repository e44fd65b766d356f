//! `mtactl tls-probe DOMAIN`: the TLS policy a delivery to DOMAIN's MX hosts gets, from
//! live DNS, decided by the same function delivery calls
//! ([`crate::delivery::hops::Outbound::probe_tls`]); with `--connect`, EHLO and
//! STARTTLS to each host under that policy.

use std::path::Path;

use super::CommandError;
use crate::config::route::{NextHop, RouteOptions, TlsPolicy, Transport};

/// Prints the destination's configured level and one line per host.
pub fn tls_probe(
    path: &Path,
    domain: &str,
    tls: Option<&str>,
    connect: bool,
) -> Result<(), CommandError> {
    let config = super::load(path)?;
    let options = RouteOptions {
        tls: match tls {
            Some(t) => Some(TlsPolicy::parse(t).map_err(|e| CommandError(e.to_string()))?),
            None => None,
        },
        ..RouteOptions::default()
    };
    let transport = match domain.trim_start_matches('[').split_once(']') {
        Some((host, rest)) => Transport::Smtp(NextHop::Host {
            host: host.to_ascii_lowercase(),
            port: rest.strip_prefix(':').and_then(|p| p.parse().ok()),
        }),
        None => Transport::Smtp(NextHop::Mx {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            port: None,
        }),
    };
    let outbound = super::daemon::outbound(&config).map_err(|e| CommandError(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError(format!("tokio: {e}")))?;
    let chosen = crate::config::tls_policy::choose(
        options.tls,
        config.delivery.tls_policy_map.as_ref().map(|(_, m)| &**m),
        config.delivery.tls,
        &transport,
    );
    outln!(
        "destination {transport}: {} from {}",
        chosen.rule,
        chosen.source
    );
    let lines = runtime
        .block_on(outbound.probe_tls(&transport, &options, connect))
        .map_err(|e| CommandError(e.to_string()))?;
    for l in lines {
        outln!("{}", crate::logsafe::esc(&l));
    }
    Ok(())
}
