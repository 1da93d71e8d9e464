//! Maps primary keys to shard groups.
//!
//! - [`range`]: ordered split points, half-open intervals `[lo, hi)`.
//! - [`hash_ring`]: a consistent-hash ring with virtual nodes over a stable
//!   hash (xxh3), so every process and every restart agrees.

pub mod hash_ring;
pub mod range;

use crate::catalog::{Partitioning, ShardGroupId};
use hash_ring::HashRing;
use range::RangePartitioner;
use std::ops::Bound;
use tessera_model::data::Value;

/// A table's router.
#[derive(Debug, Clone)]
pub enum Partitioner {
    Range(RangePartitioner),
    Hash(HashRing),
}

impl Partitioner {
    pub fn new(partitioning: &Partitioning, groups: &[ShardGroupId]) -> Partitioner {
        match partitioning {
            Partitioning::Range { split_points } => Partitioner::Range(RangePartitioner::new(split_points.clone(), groups.to_vec())),
            Partitioning::Hash { virtual_nodes } => Partitioner::Hash(HashRing::new(groups, *virtual_nodes)),
        }
    }

    /// The group that holds `pk`.
    pub fn route(&self, pk: &Value) -> ShardGroupId {
        match self {
            Partitioner::Range(r) => r.route(pk),
            Partitioner::Hash(h) => h.route(pk),
        }
    }

    /// The groups that may hold keys in the range; every group for hash tables.
    pub fn route_range(&self, lo: Bound<&Value>, hi: Bound<&Value>) -> Vec<ShardGroupId> {
        match self {
            Partitioner::Range(r) => r.route_range(lo, hi),
            Partitioner::Hash(h) => h.groups(),
        }
    }

    /// Every group of the table.
    pub fn all_groups(&self) -> Vec<ShardGroupId> {
        match self {
            Partitioner::Range(r) => r.groups().to_vec(),
            Partitioner::Hash(h) => h.groups(),
        }
    }
}
