//! End-to-end tests: real `tessera shard` and `tessera coordinator`
//! processes on free loopback ports, driven through the Rust client and the
//! `tessera sql` shell.

mod api;
mod bad_input;
mod cluster;
mod crash;
mod ddl_dml;
mod hostile;
mod isolation;
mod limits;
mod observability;
mod postgres;
mod replication;
mod resilience;
mod restart;
mod routing;
mod sagas;
mod scenario;
mod shell;
mod snapshots;
mod transactions;
