//! What the shard nodes and the coordinator share, with no server in it.
//!
//! - [`data`]: values, order-preserving keys, the row codec and scalar
//!   expressions.
//! - [`txn`]: a transaction's context and the mutations it sends a shard.
//! - [`wire`]: protobuf <-> domain conversions for the shard protocol.
//! - [`clock`]: the wall clock for timestamps and leases (shiftable for tests).
//! - [`secret`]: the cluster secret every internal call carries.
//! - [`config`]: why a node could not be configured or started.
//! - [`sqlstate`]: the one table of SQLSTATE codes both sides send.
//! - [`failpoint`]: named stopping places for crash tests.
//! - [`metrics`]: counters, histograms, the text exposition and its endpoint.
//! - [`trace`]: trace ids in gRPC metadata and task-locals.

pub mod clock;
pub mod config;
pub mod data;
pub mod failpoint;
pub mod metrics;
pub mod secret;
pub mod sqlstate;
pub mod trace;
pub mod txn;
pub mod wire;
