//! Plans that more than the SQL layer carries out: which primary keys a
//! statement touches ([`KeyAccess`]), what each shard group is asked for
//! ([`Fetch`], [`targets`]), the write plans ([`write`]) and the saga step
//! plans ([`saga`]). `sql/` builds them against the catalog; `exec/` and
//! `saga/` carry them out. Nothing here talks to a shard.

pub mod saga;
pub mod write;

use crate::catalog::{ShardGroupId, Table};
use std::collections::BTreeMap;
use std::ops::Bound;
use tessera_model::data::keys::{row_key, successor, table_end, table_prefix};
use tessera_model::data::Value;

/// Which primary keys a statement can touch.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyAccess {
    /// Exactly these primary keys (possibly none).
    Points(Vec<Value>),
    /// Keys within these bounds.
    Range { lo: Bound<Value>, hi: Bound<Value> },
    /// Every key of the table.
    Full,
}

/// What one shard group is asked for.
#[derive(Debug, Clone)]
pub enum Fetch {
    Keys(Vec<Vec<u8>>),
    Range { start: Vec<u8>, end: Vec<u8> },
}

/// The requests a key access turns into, one per shard group, in group order.
pub fn targets(table: &Table, access: &KeyAccess) -> Vec<(ShardGroupId, Fetch)> {
    let id = table.def.id;
    match access {
        KeyAccess::Points(points) => {
            let mut by_group: BTreeMap<ShardGroupId, Vec<Vec<u8>>> = BTreeMap::new();
            for pk in points {
                by_group.entry(table.route(pk)).or_default().push(row_key(id, pk));
            }
            by_group.into_iter().map(|(g, keys)| (g, Fetch::Keys(keys))).collect()
        }
        KeyAccess::Range { lo, hi } => {
            let start = match lo {
                Bound::Included(v) => row_key(id, v),
                Bound::Excluded(v) => successor(row_key(id, v)),
                Bound::Unbounded => table_prefix(id),
            };
            let end = match hi {
                Bound::Included(v) => successor(row_key(id, v)),
                Bound::Excluded(v) => row_key(id, v),
                Bound::Unbounded => table_end(id),
            };
            let groups = table.partitioner.route_range(lo.as_ref(), hi.as_ref());
            groups.into_iter().map(|g| (g, Fetch::Range { start: start.clone(), end: end.clone() })).collect()
        }
        KeyAccess::Full => table.partitioner.all_groups().into_iter().map(|g| (g, Fetch::Range { start: table_prefix(id), end: table_end(id) })).collect(),
    }
}
