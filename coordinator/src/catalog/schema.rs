//! Table definitions as stored in the catalog.

use crate::routing::Partitioner;
use serde::{Deserialize, Serialize};
use std::fmt;
use tessera_model::data::{DataType, Value};

/// Identifies a shard group (a primary and its replicas).
pub type ShardGroupId = u32;

/// How a shard group's replicas follow its primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    /// One node, no replicas.
    #[default]
    None,
    /// Writes are acknowledged after the primary's durable write.
    Async,
    /// Writes are acknowledged once `sync_replicas` replicas have them too.
    Sync,
}

impl ReplicationMode {
    pub fn name(self) -> &'static str {
        match self {
            ReplicationMode::None => "none",
            ReplicationMode::Async => "async",
            ReplicationMode::Sync => "sync",
        }
    }
}

/// A shard group as the catalog records it: its members, the current
/// primary and epoch (raised by every failover and switchover).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub members: Vec<String>,
    pub primary: String,
    pub epoch: u64,
    #[serde(default)]
    pub mode: ReplicationMode,
    #[serde(default)]
    pub sync_replicas: u32,
}

impl GroupRecord {
    /// The members that are not the primary.
    pub fn replicas(&self) -> impl Iterator<Item = &String> {
        self.members.iter().filter(move |m| **m != self.primary)
    }
}

/// A column's declared type; `max_len` for VARCHAR(n).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnType {
    pub data_type: DataType,
    pub max_len: Option<u32>,
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.data_type, self.max_len) {
            (DataType::Text, Some(n)) => write!(f, "VARCHAR({n})"),
            (t, _) => write!(f, "{t}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    pub column_type: ColumnType,
    pub nullable: bool,
    /// The DEFAULT expression as SQL text (a constant expression).
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckDef {
    pub name: String,
    /// The CHECK expression as SQL text, bound against the table's columns.
    pub sql: String,
}

/// How a table's rows are spread over shard groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Partitioning {
    /// Ordered split points: group `groups[i]` holds `[split[i-1], split[i])`.
    Range { split_points: Vec<Value> },
    /// A consistent-hash ring with this many virtual nodes per group.
    Hash { virtual_nodes: u32 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDef {
    pub id: u32,
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// Index of the primary-key column.
    pub primary_key: usize,
    pub checks: Vec<CheckDef>,
    pub partitioning: Partitioning,
    /// The shard groups the table spans, in partition order for range tables.
    pub groups: Vec<ShardGroupId>,
}

impl TableDef {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    pub fn pk_column(&self) -> &ColumnDef {
        &self.columns[self.primary_key]
    }

    /// Name of the primary-key constraint, PostgreSQL style.
    pub fn pk_constraint_name(&self) -> String {
        format!("{}_pkey", self.name)
    }
}

/// A table definition with its router built.
#[derive(Debug)]
pub struct Table {
    pub def: TableDef,
    pub partitioner: Partitioner,
}

impl Table {
    pub fn new(def: TableDef) -> Table {
        let partitioner = Partitioner::new(&def.partitioning, &def.groups);
        Table { def, partitioner }
    }

    /// The shard group holding the row with this primary key.
    pub fn route(&self, pk: &Value) -> ShardGroupId {
        self.partitioner.route(pk)
    }

    pub fn name(&self) -> &str {
        &self.def.name
    }
}
