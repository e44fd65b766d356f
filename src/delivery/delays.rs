//! Postfix's `delays=a/b/c/d` of a delivery log line: where the time of one attempt
//! went. `a`: before the scheduler took the message up (reception, and waiting in the
//! queue), `b`: in the scheduler (reading, routing, signing), `c`: connection setup
//! (DNS, connect, greeting, EHLO, TLS, AUTH), `d`: transmission (MAIL FROM to the
//! last reply). A transport without a connection (Maildir, discard) has no `c`; an
//! attempt that never got a connection ready spent all of its time in `c`.
//!
//! The client marks the moment its connection is ready ([`connection_ready`]); the
//! scheduler runs each transport call inside [`timed`], which reads that mark.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

tokio::task_local! {
    static READY: Cell<Option<Instant>>;
}

/// The connection of the transport call running on this task is ready for MAIL FROM
/// (a later connection, to a fallback host, moves the mark).
pub fn connection_ready() {
    let _ = READY.try_with(|ready| ready.set(Some(Instant::now())));
}

/// The moments of one transport call.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    handoff: Instant,
    ready: Option<Instant>,
    done: Instant,
}

impl Timing {
    /// A recipient decided without a transport call (refused by the route stage,
    /// expired): nothing after `at`.
    pub fn none(at: Instant) -> Timing {
        Timing {
            handoff: at,
            ready: Some(at),
            done: at,
        }
    }
}

/// Runs one transport call, timing it.
pub async fn timed<F: Future>(call: F) -> (F::Output, Timing) {
    let handoff = Instant::now();
    let (out, ready) = READY
        .scope(Cell::new(None), async {
            let out = call.await;
            (out, READY.with(Cell::get))
        })
        .await;
    let done = Instant::now();
    (
        out,
        Timing {
            handoff,
            ready,
            done,
        },
    )
}

/// The four parts, as a delivery line shows them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Delays {
    pub before_scheduler: Duration,
    pub in_scheduler: Duration,
    pub setup: Duration,
    pub transmission: Duration,
}

impl Delays {
    /// An attempt the scheduler took up at `picked`, `queued_for` after the message
    /// arrived; `connects`: the transport makes connections (SMTP, LMTP, a filter).
    pub fn of(queued_for: Duration, picked: Instant, timing: Timing, connects: bool) -> Delays {
        let in_scheduler = timing.handoff.saturating_duration_since(picked);
        let (setup, transmission) = match timing.ready {
            Some(ready) => (
                ready.saturating_duration_since(timing.handoff),
                timing.done.saturating_duration_since(ready),
            ),
            None if connects => (
                timing.done.saturating_duration_since(timing.handoff),
                Duration::ZERO,
            ),
            None => (
                Duration::ZERO,
                timing.done.saturating_duration_since(timing.handoff),
            ),
        };
        Delays {
            before_scheduler: queued_for,
            in_scheduler,
            setup,
            transmission,
        }
    }
}

impl fmt::Display for Delays {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            Seconds(self.before_scheduler),
            Seconds(self.in_scheduler),
            Seconds(self.setup),
            Seconds(self.transmission)
        )
    }
}

/// Seconds as Postfix logs a delay (`format_tv` with two significant digits and at
/// most two decimals): `0.12`, `1.2`, `12`, `7239`, and `0` below 5 ms.
pub struct Seconds(pub Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0.as_secs_f64();
        let decimals: usize = if v >= 10.0 {
            0
        } else if v >= 1.0 {
            1
        } else {
            2
        };
        let text = format!("{v:.decimals$}");
        let text = if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.')
        } else {
            &text
        };
        f.write_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_read_as_postfix_writes_them() {
        let s = |ms: u64| Seconds(Duration::from_millis(ms)).to_string();
        assert_eq!(
            [
                s(0),
                s(4),
                s(6),
                s(50),
                s(123),
                s(1234),
                s(1000),
                s(12_345),
                s(7_239_400)
            ],
            ["0", "0", "0.01", "0.05", "0.12", "1.2", "1", "12", "7239"]
        );
    }

    #[tokio::test]
    async fn the_parts_add_up_to_the_attempt() {
        let picked = Instant::now();
        let (out, timing) = timed(async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            connection_ready();
            tokio::time::sleep(Duration::from_millis(20)).await;
            7
        })
        .await;
        assert_eq!(out, 7);
        let d = Delays::of(Duration::from_secs(3), picked, timing, true);
        assert_eq!(d.before_scheduler, Duration::from_secs(3));
        assert!(
            d.setup >= Duration::from_millis(30) && d.setup < Duration::from_millis(200),
            "{d:?}"
        );
        assert!(d.transmission >= Duration::from_millis(20), "{d:?}");
        // no connection ever ready: all of it was setup (a connection refused, a timeout)
        let (_, timing) = timed(async {}).await;
        assert_eq!(
            Delays::of(Duration::ZERO, picked, timing, true).transmission,
            Duration::ZERO
        );
        // outside `timed`, marking is harmless
        connection_ready();
    }
}
