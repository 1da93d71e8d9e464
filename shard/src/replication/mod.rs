//! Replication within a shard group: one primary, zero or more replicas,
//! each a `tessera shard` process with its own RocksDB.
//!
//! - [`log`]: the replication log. Every durable batch on the primary
//!   (commits, PREPARE records, aborts, lazy two-phase commits, DROP TABLE)
//!   gets the next sequence number and is stored as a record in the same
//!   atomic write, so the log is exactly the primary's history.
//! - [`primary`]: shipping records to replicas over a gRPC stream (or a
//!   snapshot when the log no longer holds what a replica needs, or the
//!   replica diverged), tracking acknowledgements, waiting for them in sync
//!   mode.
//! - [`replica`]: following the primary, applying records in order and
//!   durably, acknowledging them, measuring staleness.
//! - [`progress`]: each replica's acknowledged record (primary side) and a
//!   replica's staleness.
//! - [`rules`]: fencing, leases and heartbeat transitions as plain
//!   functions with a unit test each.
//! - [`node`]: role, epoch and lease; the transitions the coordinator's
//!   heartbeats ask for; fencing of requests from old epochs.
//!
//! Modes: **sync** acknowledges a durable write (PREPARE, one-phase commit,
//! abort of a prepared transaction, the WAL sync that makes lazy commits
//! durable) only after `sync_replicas` replicas have applied it durably;
//! **async** acknowledges after the primary's own durable write, and
//! replicas follow. What each can lose on failover, and the failover rule,
//! are in docs/architecture/replication.md.
//!
//! A replica holds the prepared records too, so a promoted replica reloads
//! every prepared transaction with its locks and waits for (or asks for)
//! the coordinator's decision, as a restarted primary would.

pub mod log;
pub mod node;
pub mod primary;
pub mod progress;
pub mod replica;
pub mod rules;

pub use log::LoggedEngine;

/// Why a replication stream ended (on the primary or on a replica); the
/// follower reconnects after each, the primary drops the stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The other side went away, stalled, refused or could not be reached.
    #[error("{0}")]
    Peer(String),
    /// This node is no longer the primary of the stream's epoch, or stops.
    #[error("{0}")]
    Superseded(String),
    /// The local log or engine failed.
    #[error(transparent)]
    Storage(#[from] tessera_storage::StorageError),
}

impl StreamError {
    /// A blocking task that could not finish (it panicked or was cancelled).
    pub(crate) fn task(e: tokio::task::JoinError) -> StreamError {
        StreamError::Storage(tessera_storage::StorageError::other(format!("a replication task failed: {e}")))
    }
}
pub use node::{Access, Node, Role};
