//! Server TLS for the listeners: one acceptor per certificate (the files are read by
//! [`crate::net::tls`], which also checked them when the configuration was loaded).

use std::collections::HashMap;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::net::tls::{CertKey, TlsFileError, server_config};

/// A listener's certificate cannot be used now (it was when the configuration was
/// checked: a file changed or went away).
#[derive(Debug, thiserror::Error)]
#[error("listener \"{listener}\": {source}")]
pub struct ListenerTlsError {
    pub listener: String,
    pub source: TlsFileError,
}

/// One acceptor per distinct certificate, built at start for every listener that uses
/// TLS. A file that cannot be read now (it was fine when the configuration was
/// checked) is an error naming the listener.
pub fn acceptors(config: &Config) -> Result<HashMap<String, TlsAcceptor>, ListenerTlsError> {
    let mut built: HashMap<&CertKey, TlsAcceptor> = HashMap::new();
    let mut out = HashMap::new();
    for l in &config.listeners {
        let Some(pair) = &l.certificate else { continue };
        let acceptor = match built.get(pair) {
            Some(a) => a.clone(),
            None => {
                let a =
                    TlsAcceptor::from(server_config(pair).map_err(|source| ListenerTlsError {
                        listener: l.name.clone(),
                        source,
                    })?);
                built.insert(pair, a.clone());
                a
            }
        };
        out.insert(l.name.clone(), acceptor);
    }
    Ok(out)
}
