//! The catalog: table definitions and the shard map, persisted in the
//! coordinator's own RocksDB with synced writes, cached in memory.
//!
//! - [`schema`]: table, column, constraint and partitioning definitions.
//! - [`store`]: the durable store and the in-memory cache.

pub mod schema;
mod store;

pub use schema::{CheckDef, ColumnDef, ColumnType, GroupRecord, Partitioning, ReplicationMode, ShardGroupId, Table, TableDef};
pub use store::Catalog;
