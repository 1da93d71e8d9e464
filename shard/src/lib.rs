//! A Tessera shard node: one RocksDB database served over gRPC.
//!
//! - [`data`]: values, order-preserving keys, the row codec and scalar
//!   expressions (shared with the coordinator).
//! - [`storage`]: the engine trait, RocksDB and in-memory engines.
//! - [`txn`]: the transactional participant: row locks, write sets, durable
//!   prepare records, recovery of prepared transactions.
//! - [`service`]: the gRPC service (`tessera.shard.v1.Shard`).
//! - [`wire`]: protobuf <-> domain conversions for the shard protocol.
//! - [`resolver`]: asks the coordinator about in-doubt prepared transactions.
//! - [`replication`]: the replication log, shipping records to replicas,
//!   following a primary, roles, epochs and leases (fencing).
//! - [`secret`]: the cluster secret every internal call carries.
//! - [`clock`]: the node's wall clock for leases (shiftable for tests).
//! - [`config`], [`server`]: configuration and running a node.
//! - [`error`]: the shard's errors and their gRPC mapping.
//! - [`failpoint`]: named stopping places for crash tests.
//! - [`metrics`]: counters, histograms and the Prometheus endpoint.
//! - [`telemetry`]: trace ids in gRPC metadata, and the shard's metrics page.

pub mod clock;
pub mod config;
pub mod data;
pub mod error;
pub mod failpoint;
pub mod metrics;
pub mod replication;
pub mod resolver;
pub mod secret;
pub mod server;
pub mod service;
pub mod storage;
pub mod telemetry;
pub mod txn;
pub mod wire;
