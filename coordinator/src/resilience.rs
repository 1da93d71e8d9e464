//! Guards on every call from the coordinator to a shard node:
//!
//! - a **circuit breaker** per node: after `failure_threshold` failures in a
//!   row (the node unreachable or not answering in time) it opens, and
//!   calls fail at once with an error that names the node, for `open_for`;
//!   then one call is let through (half-open): if it succeeds the breaker
//!   closes, if not it opens again. A successful heartbeat closes it too.
//! - a **bulkhead** per node: at most `max_in_flight` calls at once, so a
//!   slow node cannot tie up every task of the coordinator; a call beyond
//!   the bound fails at once.
//! - **retries** with exponential backoff and jitter, for calls that are
//!   safe to repeat (reads outside transactions, PREPARE, COMMIT and ABORT
//!   of a two-phase commit, WAL syncs, status), and only on failures that
//!   may pass (unreachable, timeout).
//!
//! Deadlines are on the channel (`rpc_timeout_ms`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct GuardConfig {
    pub failure_threshold: u32,
    pub open_for: Duration,
    pub max_in_flight: usize,
    /// Attempts of a call that is safe to repeat.
    pub attempts: u32,
    pub backoff_base: Duration,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig { failure_threshold: 5, open_for: Duration::from_secs(2), max_in_flight: 256, attempts: 3, backoff_base: Duration::from_millis(25) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe call is out.
    HalfOpen,
}

/// Why a call was not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The breaker is open; it lets a probe through in this long.
    Open { retry_in: Duration },
    /// `max_in_flight` calls are already out.
    Full { in_flight: usize },
}

/// The breaker and bulkhead of one node.
pub struct NodeGuard {
    config: GuardConfig,
    state: Mutex<State>,
    permits: std::sync::Arc<Semaphore>,
    /// Calls refused without being sent.
    refused: AtomicU64,
    opened: AtomicU64,
}

/// A call let through: holds its bulkhead place; report how it went.
pub struct Admitted {
    _place: OwnedSemaphorePermit,
    probe: bool,
}

impl NodeGuard {
    pub fn new(config: GuardConfig) -> NodeGuard {
        NodeGuard {
            config,
            state: Mutex::new(State::Closed { failures: 0 }),
            permits: std::sync::Arc::new(Semaphore::new(config.max_in_flight)),
            refused: AtomicU64::new(0),
            opened: AtomicU64::new(0),
        }
    }

    /// Lets a call through, or says why not.
    pub fn admit(&self) -> Result<Admitted, Refused> {
        let probe = {
            let mut state = self.state.lock().unwrap();
            match *state {
                State::Closed { .. } => false,
                State::Open { until } => {
                    let now = Instant::now();
                    if now < until {
                        self.refused.fetch_add(1, Ordering::Relaxed);
                        return Err(Refused::Open { retry_in: until - now });
                    }
                    *state = State::HalfOpen;
                    true
                }
                State::HalfOpen => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(Refused::Open { retry_in: Duration::ZERO });
                }
            }
        };
        match self.permits.clone().try_acquire_owned() {
            Ok(place) => Ok(Admitted { _place: place, probe }),
            Err(_) => {
                if probe {
                    // Give the probe back: the next call may try.
                    *self.state.lock().unwrap() = State::Open { until: Instant::now() };
                }
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(Refused::Full { in_flight: self.config.max_in_flight })
            }
        }
    }

    /// How an admitted call went: `failed` when the node did not answer.
    pub fn finish(&self, call: Admitted, failed: bool) {
        let mut state = self.state.lock().unwrap();
        match (*state, failed) {
            (_, false) => *state = State::Closed { failures: 0 },
            (State::Closed { failures }, true) if failures + 1 >= self.config.failure_threshold => self.open(&mut state),
            (State::Closed { failures }, true) => *state = State::Closed { failures: failures + 1 },
            (State::HalfOpen, true) if call.probe => self.open(&mut state),
            (_, true) => {}
        }
    }

    fn open(&self, state: &mut State) {
        *state = State::Open { until: Instant::now() + self.config.open_for };
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    /// The node answered a heartbeat: it is back.
    pub fn heard_from(&self) {
        let mut state = self.state.lock().unwrap();
        if !matches!(*state, State::Closed { .. }) {
            *state = State::Closed { failures: 0 };
        }
    }

    /// closed, open or half-open.
    pub fn state(&self) -> &'static str {
        match *self.state.lock().unwrap() {
            State::Closed { .. } => "closed",
            State::Open { until } if Instant::now() >= until => "half-open",
            State::Open { .. } => "open",
            State::HalfOpen => "half-open",
        }
    }

    pub fn in_flight(&self) -> usize {
        self.config.max_in_flight - self.permits.available_permits()
    }

    /// (calls refused without being sent, times the breaker opened)
    pub fn counters(&self) -> (u64, u64) {
        (self.refused.load(Ordering::Relaxed), self.opened.load(Ordering::Relaxed))
    }

    pub fn config(&self) -> GuardConfig {
        self.config
    }

    /// The pause before retry `attempt` (1-based): exponential, with jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let full = self.config.backoff_base.saturating_mul(1 << attempt.min(10));
        let half = full.as_micros() as u64 / 2;
        Duration::from_micros(half + rand::Rng::gen_range(&mut rand::thread_rng(), 0..=half))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(threshold: u32, open_ms: u64, max: usize) -> NodeGuard {
        NodeGuard::new(GuardConfig { failure_threshold: threshold, open_for: Duration::from_millis(open_ms), max_in_flight: max, ..GuardConfig::default() })
    }

    #[tokio::test]
    async fn the_breaker_opens_fails_fast_and_recovers() {
        let g = guard(3, 50, 8);
        for _ in 0..2 {
            let call = g.admit().unwrap();
            g.finish(call, true);
        }
        assert_eq!(g.state(), "closed", "two failures are below the threshold");
        let call = g.admit().unwrap();
        g.finish(call, true);
        assert_eq!(g.state(), "open");
        assert!(matches!(g.admit(), Err(Refused::Open { .. })), "open: fails fast");
        assert_eq!(g.counters(), (1, 1));
        tokio::time::sleep(Duration::from_millis(60)).await;
        // Half-open: one probe goes through, others wait for its outcome.
        let probe = g.admit().unwrap();
        assert!(matches!(g.admit(), Err(Refused::Open { .. })));
        g.finish(probe, true);
        assert_eq!(g.state(), "open", "a failed probe opens it again");
        tokio::time::sleep(Duration::from_millis(60)).await;
        let probe = g.admit().unwrap();
        g.finish(probe, false);
        assert_eq!(g.state(), "closed", "a successful probe closes it");
        // A success resets the count of failures in a row.
        let call = g.admit().unwrap();
        g.finish(call, true);
        let call = g.admit().unwrap();
        g.finish(call, false);
        for _ in 0..2 {
            let call = g.admit().unwrap();
            g.finish(call, true);
        }
        assert_eq!(g.state(), "closed");
        // A heartbeat from the node closes an open breaker at once.
        let call = g.admit().unwrap();
        g.finish(call, true);
        assert_eq!(g.state(), "open");
        g.heard_from();
        assert!(g.admit().is_ok());
    }

    #[tokio::test]
    async fn the_bulkhead_bounds_calls_in_flight() {
        let g = guard(3, 50, 2);
        let a = g.admit().unwrap();
        let b = g.admit().unwrap();
        assert_eq!(g.in_flight(), 2);
        assert_eq!(g.admit().err(), Some(Refused::Full { in_flight: 2 }), "a third call fails at once");
        g.finish(a, false);
        let c = g.admit().expect("a place came free");
        g.finish(b, false);
        g.finish(c, false);
        assert_eq!(g.in_flight(), 0);
        assert_eq!(g.state(), "closed", "a full bulkhead is not a failure of the node");
    }

    #[test]
    fn backoff_grows_with_jitter() {
        let g = guard(3, 50, 2);
        for attempt in 1..5 {
            let full = Duration::from_millis(25 * (1 << attempt));
            let d = g.backoff(attempt);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
    }
}
