//! Connection limits: in total and per client address (Postfix's
//! `smtpd_client_connection_count_limit`). A slot is held by a [`ConnectionGuard`] for
//! the life of the session and given back when it drops.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::config::Limits;

#[derive(Default)]
pub struct Connections {
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    Total,
    PerClient,
}

pub struct ConnectionGuard {
    owner: Arc<Connections>,
    ip: IpAddr,
}

impl Connections {
    pub fn try_acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: &Limits,
    ) -> Result<ConnectionGuard, LimitHit> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= limits.connections {
            return Err(LimitHit::Total);
        }
        let n = counts.per_ip.entry(ip).or_default();
        if *n >= limits.connections_per_ip {
            return Err(LimitHit::PerClient);
        }
        *n += 1;
        counts.total += 1;
        Ok(ConnectionGuard {
            owner: self.clone(),
            ip,
        })
    }

    pub fn total(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total -= 1;
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_release() {
        let limits = Limits {
            connections: 3,
            connections_per_ip: 2,
            ..Limits::default()
        };
        let c = Arc::new(Connections::default());
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let g1 = c.try_acquire(a, &limits).unwrap();
        let _g2 = c.try_acquire(a, &limits).unwrap();
        assert_eq!(c.try_acquire(a, &limits).err(), Some(LimitHit::PerClient));
        let _g3 = c.try_acquire(b, &limits).unwrap();
        assert_eq!(c.try_acquire(b, &limits).err(), Some(LimitHit::Total));
        drop(g1);
        assert!(c.try_acquire(a, &limits).is_ok());
    }
}
