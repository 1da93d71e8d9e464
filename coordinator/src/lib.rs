//! The Tessera coordinator: SQL front end, catalog, router and shard clients.
//!
//! - [`sql`]: parse (sqlparser, PostgreSQL dialect), bind and plan against
//!   the catalog; see its module page for the tour of the SQL layer.
//! - [`plan`]: the plans the executor and the saga orchestrator carry out.
//! - [`exec`]: the statement executor ([`exec::Engine`]): runs statements
//!   for a session with transactions, sagas, idempotency and replica reads.
//! - [`read`]: parallel reads from the shard groups' primaries or replicas.
//! - [`result`]: statement results.
//! - [`txn`]: transactions: one-phase and two-phase commit, the durable
//!   decision log with group commit, redelivery of decisions, outcomes for
//!   participants (its module page is the 2PC protocol essay).
//! - [`saga`]: orchestrated sagas: steps, compensations, the saga log,
//!   recovery and parking.
//! - [`session`]: client sessions and their open transactions.
//! - [`catalog`]: tables and the shard map, durable in the coordinator's RocksDB.
//! - [`routing`]: range partitioning and the consistent-hash ring.
//! - [`shards`]: gRPC clients of the shard groups, with deadlines, the
//!   group's epoch on every call, and errors that name the group.
//! - [`resilience`]: the circuit breaker, bulkhead and retries every shard
//!   call goes through.
//! - [`failover`]: heartbeats, leases, failure detection, promotion of the
//!   most up-to-date replica, planned switchover.
//! - [`api`]: the gRPC services (`tessera.v1.Tessera`, `tessera.v1.Admin`,
//!   the internal resolver).
//! - [`postgres`]: the PostgreSQL wire protocol front end (psql, drivers).
//! - [`idempotency`]: idempotency keys and their durable outcomes.
//! - [`auth`], [`tls`]: client authentication (bearer tokens, SCRAM) and
//!   TLS for the client endpoints.
//! - [`config`], [`server`]: configuration and running a coordinator.
//! - [`background`]: every background task, stopped and joined at shutdown.
//! - [`error`]: errors, with the one SQLSTATE and gRPC status mapping.

pub mod api;
pub mod auth;
pub mod background;
pub mod catalog;
pub mod config;
pub mod error;
pub mod exec;
pub mod failover;
pub mod idempotency;
pub mod metrics;
pub mod plan;
pub mod postgres;
pub mod read;
pub mod resilience;
pub mod result;
pub mod routing;
pub mod saga;
pub mod server;
pub mod session;
pub mod shards;
pub mod sql;
pub mod tls;
pub mod txn;
