//! A Tessera shard node: one RocksDB database served over gRPC.
//!
//! Values, keys, rows, expressions and the shard wire conversions are
//! `tessera_model`'s; the storage engines are `tessera_storage`'s.
//!
//! - [`mvcc`]: multi-version rows: the version layout and reads at a
//!   timestamp.
//! - [`txn`]: the transactional participant: row locks, write sets, durable
//!   prepare records, recovery of prepared transactions, commit timestamps
//!   and the waits that keep snapshot reads stable.
//! - [`service`]: the gRPC service (`tessera.shard.v1.Shard`).
//! - [`resolver`]: asks the coordinator about in-doubt prepared transactions.
//! - [`replication`]: the replication log, shipping records to replicas,
//!   following a primary, roles, epochs and leases (fencing).
//! - [`config`], [`server`]: configuration and running a node.
//! - [`error`]: the shard's errors and their gRPC mapping.
//! - [`metrics`]: what a node counts.
//! - [`telemetry`]: the node's metrics page.

pub mod config;
pub mod error;
pub mod metrics;
pub mod mvcc;
pub mod replication;
pub mod resolver;
pub mod server;
pub mod service;
pub mod telemetry;
pub mod txn;
