//! Consistent hashing: each shard group owns `virtual_nodes` points on a
//! 64-bit ring; a key belongs to the first point at or after its hash.
//!
//! Both positions and key hashes use xxh3-64, whose output is fixed by its
//! specification, never `std`'s randomized hashers. Adding a group only moves
//! keys onto the new group's points: about 1/N of them, none between old groups.

use crate::catalog::ShardGroupId;
use tessera_model::data::{keys, Value};
use xxhash_rust::xxh3::xxh3_64;

#[derive(Debug, Clone)]
pub struct HashRing {
    /// (position, group), sorted by position.
    points: Vec<(u64, ShardGroupId)>,
    groups: Vec<ShardGroupId>,
}

/// The stable hash of a primary key (its order-preserving encoding).
pub fn key_hash(pk: &Value) -> u64 {
    let mut bytes = Vec::with_capacity(16);
    keys::encode_value(&mut bytes, pk);
    xxh3_64(&bytes)
}

impl HashRing {
    pub fn new(groups: &[ShardGroupId], virtual_nodes: u32) -> HashRing {
        let mut points = Vec::with_capacity(groups.len() * virtual_nodes as usize);
        for &g in groups {
            for v in 0..virtual_nodes {
                points.push((xxh3_64(format!("tessera/group/{g}/vnode/{v}").as_bytes()), g));
            }
        }
        points.sort_unstable();
        let mut groups = groups.to_vec();
        groups.sort_unstable();
        groups.dedup();
        HashRing { points, groups }
    }

    pub fn groups(&self) -> Vec<ShardGroupId> {
        self.groups.clone()
    }

    /// The group owning a hash: the first point at or after it, wrapping.
    pub fn route_hash(&self, hash: u64) -> ShardGroupId {
        let i = self.points.partition_point(|(p, _)| *p < hash);
        self.points[i % self.points.len()].1
    }

    pub fn route(&self, pk: &Value) -> ShardGroupId {
        self.route_hash(key_hash(pk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const KEYS: i64 = 100_000;

    fn load(ring: &HashRing) -> HashMap<ShardGroupId, usize> {
        let mut counts = HashMap::new();
        for k in 0..KEYS {
            *counts.entry(ring.route(&Value::Int(k))).or_default() += 1;
        }
        counts
    }

    #[test]
    fn keys_spread_evenly_over_three_groups() {
        let ring = HashRing::new(&[1, 2, 3], 256);
        let counts = load(&ring);
        let mean = KEYS as f64 / 3.0;
        let max = *counts.values().max().unwrap() as f64;
        let ratio = max / mean;
        println!("hash ring, 3 groups x 256 virtual nodes, {KEYS} keys: loads {counts:?}, max/mean = {ratio:.3}");
        assert_eq!(counts.len(), 3);
        assert!(ratio < 1.15, "max/mean load ratio {ratio:.3}");
    }

    #[test]
    fn adding_a_group_moves_about_a_quarter_and_nothing_between_old_groups() {
        let old = HashRing::new(&[1, 2, 3], 256);
        let new = HashRing::new(&[1, 2, 3, 4], 256);
        let mut moved = 0;
        for k in 0..KEYS {
            let (before, after) = (old.route(&Value::Int(k)), new.route(&Value::Int(k)));
            if before != after {
                assert_eq!(after, 4, "key {k} moved from group {before} to old group {after}");
                moved += 1;
            }
        }
        let fraction = moved as f64 / KEYS as f64;
        println!("adding group 4 moved {moved} of {KEYS} keys ({fraction:.3})");
        assert!((0.20..0.30).contains(&fraction), "moved fraction {fraction:.3}");
    }

    #[test]
    fn routing_is_stable_across_builds_and_text_keys() {
        let a = HashRing::new(&[3, 1, 2], 64);
        let b = HashRing::new(&[1, 2, 3], 64);
        for k in ["alice", "bob", "", "日本"] {
            let v = Value::Text(k.to_string());
            assert_eq!(a.route(&v), b.route(&v));
        }
        // A fixed value: changing the hash or the key encoding would move
        // every stored row to another group.
        assert_eq!(key_hash(&Value::Int(42)), 0x1e76_30d9_2151_32ed);
        assert_ne!(key_hash(&Value::Int(42)), key_hash(&Value::Int(43)));
    }
}
