//! Tessera: a sharded SQL transaction coordinator.
//!
//! This root package holds the one user-facing binary, `tessera`, and the
//! Rust client library:
//!
//! - [`client`]: connect to a coordinator over gRPC and run SQL.
//! - [`cluster`]: start a whole cluster (shards + coordinator) in one process,
//!   as `tessera demo` and `tessera bench` do.
//! - [`shell`]: the interactive `tessera sql` shell and its output format.
//! - [`bench`]: `tessera bench kv`.
//!
//! The storage node lives in the `tessera-shard` crate, the SQL front end,
//! catalog and router in `tessera-coordinator`, the wire contracts in
//! `tessera-proto`.

pub mod bench;
pub mod client;
pub mod cluster;
pub mod shell;
