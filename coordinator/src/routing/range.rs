//! Range partitioning: `n` ordered split points cut the key space into
//! `n + 1` half-open intervals; interval `i` is `[split[i-1], split[i])` and
//! belongs to `groups[i]`.

use crate::catalog::ShardGroupId;
use std::cmp::Ordering;
use std::ops::Bound;
use tessera_model::data::Value;

#[derive(Debug, Clone)]
pub struct RangePartitioner {
    splits: Vec<Value>,
    groups: Vec<ShardGroupId>,
}

impl RangePartitioner {
    /// `groups.len()` must be `splits.len() + 1`; splits strictly increasing.
    pub fn new(splits: Vec<Value>, groups: Vec<ShardGroupId>) -> RangePartitioner {
        assert_eq!(groups.len(), splits.len() + 1, "one group per interval");
        RangePartitioner { splits, groups }
    }

    pub fn groups(&self) -> &[ShardGroupId] {
        &self.groups
    }

    /// Index of the interval holding `v`: the number of split points <= v.
    fn interval(&self, v: &Value) -> usize {
        self.splits.partition_point(|s| s.sort_cmp(v) != Ordering::Greater)
    }

    pub fn route(&self, pk: &Value) -> ShardGroupId {
        self.groups[self.interval(pk)]
    }

    /// Groups whose intervals overlap the range, in key order.
    pub fn route_range(&self, lo: Bound<&Value>, hi: Bound<&Value>) -> Vec<ShardGroupId> {
        if is_empty(lo, hi) {
            return Vec::new();
        }
        let first = match lo {
            Bound::Unbounded => 0,
            Bound::Included(v) | Bound::Excluded(v) => self.interval(v),
        };
        let last = match hi {
            Bound::Unbounded => self.splits.len(),
            Bound::Included(v) => self.interval(v),
            // The interval starting exactly at an excluded bound is not reached.
            Bound::Excluded(v) => self.splits.partition_point(|s| s.sort_cmp(v) == Ordering::Less),
        };
        if first > last {
            return Vec::new();
        }
        let mut groups: Vec<ShardGroupId> = Vec::new();
        for g in &self.groups[first..=last] {
            if !groups.contains(g) {
                groups.push(*g);
            }
        }
        groups
    }
}

/// True when no value lies between the bounds.
fn is_empty(lo: Bound<&Value>, hi: Bound<&Value>) -> bool {
    match (lo, hi) {
        (Bound::Included(l), Bound::Included(h)) => l.sort_cmp(h) == Ordering::Greater,
        (Bound::Included(l) | Bound::Excluded(l), Bound::Included(h) | Bound::Excluded(h)) => l.sort_cmp(h) != Ordering::Less,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(i: i64) -> Value {
        Value::Int(i)
    }

    #[test]
    fn points_go_to_their_half_open_interval() {
        let r = RangePartitioner::new(vec![int(100), int(200)], vec![1, 2, 3]);
        assert_eq!(r.route(&int(i64::MIN)), 1);
        assert_eq!(r.route(&int(99)), 1);
        assert_eq!(r.route(&int(100)), 2);
        assert_eq!(r.route(&int(199)), 2);
        assert_eq!(r.route(&int(200)), 3);
        assert_eq!(r.route(&int(i64::MAX)), 3);
    }

    #[test]
    fn ranges_reach_only_overlapping_groups() {
        let r = RangePartitioner::new(vec![int(100), int(200)], vec![1, 2, 3]);
        use Bound::*;
        assert_eq!(r.route_range(Included(&int(10)), Excluded(&int(100))), vec![1]);
        assert_eq!(r.route_range(Included(&int(10)), Included(&int(100))), vec![1, 2]);
        assert_eq!(r.route_range(Excluded(&int(150)), Unbounded), vec![2, 3]);
        assert_eq!(r.route_range(Unbounded, Unbounded), vec![1, 2, 3]);
        assert_eq!(r.route_range(Included(&int(250)), Included(&int(240))), Vec::<u32>::new());
        assert_eq!(r.route_range(Included(&int(200)), Included(&int(200))), vec![3]);
    }
}
