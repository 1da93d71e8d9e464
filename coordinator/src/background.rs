//! The coordinator's background tasks: the journal writer, redelivery of
//! COMMIT decisions and the WAL-sync task, saga drivers, heartbeats and
//! failovers, idempotency garbage collection, the session reaper and the
//! PostgreSQL connections. Every one is spawned through [`Background`], so
//! that shutdown stops them and waits for them ([`Background::join`]).
//!
//! Two kinds:
//! - [`Background::spawn`]: runs to its end (the journal writer drains its
//!   queue; a delivery or heartbeat ends within its deadline; loops that
//!   watch the stop signal themselves);
//! - [`Background::spawn_until_stopped`]: dropped at its next await once
//!   the coordinator stops. Only for work whose every step is logged before
//!   it is acted on (redelivery, saga drivers), which a restarted
//!   coordinator resumes from its journal as it would after a crash.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for background tasks.
pub const STOP_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Background {
    tracker: TaskTracker,
    stop: watch::Receiver<bool>,
    /// The sender of a [`Background::detached`] set, kept so it never stops.
    _never: Option<Arc<watch::Sender<bool>>>,
}

impl Background {
    /// Tasks that stop when `stop` turns true.
    pub fn new(stop: watch::Receiver<bool>) -> Background {
        Background { tracker: TaskTracker::new(), stop, _never: None }
    }

    /// Tasks that are never told to stop (unit tests).
    pub fn detached() -> Background {
        let (never, stop) = watch::channel(false);
        Background { tracker: TaskTracker::new(), stop, _never: Some(Arc::new(never)) }
    }

    /// A receiver of the stop signal, for loops that watch it themselves.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }

    /// Resolves once the coordinator is stopping.
    pub async fn stopped(&self) {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|s| *s).await;
    }

    /// Spawns a task that runs to its end; shutdown waits for it.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Spawns a task that is dropped once the coordinator stops (its output
    /// is then `None`); shutdown waits for it to be dropped.
    pub fn spawn_until_stopped<F>(&self, task: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let this = self.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                biased;
                _ = this.stopped() => None,
                out = task => Some(out),
            }
        })
    }

    /// Tasks still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Waits (at most `within`) until every task has ended; false if some
    /// are still running then. Call after the stop signal.
    pub async fn join(&self, within: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(within, self.tracker.wait()).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stopping_drops_stoppable_tasks_and_waits_for_the_rest() {
        let (stop, signal) = watch::channel(false);
        let background = Background::new(signal);
        let forever = background.spawn_until_stopped(std::future::pending::<()>());
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let draining = background.spawn(async move {
            let _ = finished.await;
            7
        });
        assert!(!background.join(Duration::from_millis(50)).await, "both still run");
        stop.send(true).unwrap();
        assert_eq!(forever.await.unwrap(), None, "a stoppable task is dropped");
        assert!(!background.join(Duration::from_millis(50)).await, "the other runs to its end");
        finish.send(()).unwrap();
        assert!(background.join(Duration::from_secs(5)).await);
        assert_eq!(draining.await.unwrap(), 7);
        assert_eq!(background.running(), 0);
    }

    #[tokio::test]
    async fn detached_tasks_are_never_stopped() {
        let background = Background::detached();
        let task = background.spawn_until_stopped(async { 3 });
        assert_eq!(task.await.unwrap(), Some(3));
    }
}
