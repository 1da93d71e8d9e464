//! Tessera: a sharded SQL transaction coordinator.
//!
//! This root package holds the one user-facing binary, `tessera`, and the
//! Rust client library:
//!
//! - [`client`]: connect to a coordinator over gRPC and run SQL
//!   ([`Client`]; typed rows, transactions retried on 40001, sagas,
//!   idempotency keys).
//! - [`cluster`]: start a whole cluster (shards + coordinator) in one process,
//!   as `tessera demo` and `tessera bench` do.
//! - [`shell`]: the interactive `tessera sql` shell and its output format.
//! - [`bench`]: `tessera bench kv` and `tessera bench bank`.
//!
//! The storage node lives in the `tessera-shard` crate, the SQL front end,
//! catalog and router in `tessera-coordinator`, the wire contracts in
//! `tessera-proto`.

pub mod bench;
pub mod client;
pub mod cluster;
pub mod shell;

pub use client::{Client, ClientBuilder, ClientError, Protocol, Row, StatementResult, Value};
