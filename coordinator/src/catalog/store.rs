//! The catalog's durable store: JSON records in the coordinator's storage
//! engine (RocksDB, or memory in tests), written with a synced WAL, and an
//! in-memory cache that serves every lookup.
//!
//! Keys (in the engine's data keyspace, which the coordinator's journal
//! shares under its own prefixes): `table/<name>` -> TableDef,
//! `meta/next_table_id` -> u32, `group/<id>` -> GroupRecord (members,
//! primary, epoch).

use super::schema::{GroupRecord, ReplicationMode, ShardGroupId, Table, TableDef};
use crate::config::ShardGroupConfig;
use crate::error::{CoordError, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use tessera_storage::rocks::RocksEngine;
use tessera_storage::{scan_prefix, Engine, Space, Write};

pub struct Catalog {
    engine: Arc<dyn Engine>,
    tables: RwLock<BTreeMap<String, Arc<Table>>>,
    groups: RwLock<BTreeMap<ShardGroupId, GroupRecord>>,
    /// Serializes DDL so ids and names stay unique.
    ddl: Mutex<u32>,
}

const NEXT_TABLE_ID: &[u8] = b"meta/next_table_id";

fn internal(e: impl std::fmt::Display) -> CoordError {
    CoordError::Internal(format!("catalog: {e}"))
}

fn put(key: impl Into<Vec<u8>>, value: Vec<u8>) -> Write {
    Write { space: Space::Data, key: key.into(), value: Some(value) }
}

fn delete(key: impl Into<Vec<u8>>) -> Write {
    Write { space: Space::Data, key: key.into(), value: None }
}

impl Catalog {
    /// Opens the catalog at `path` and loads every table and shard group.
    pub fn open(path: &Path) -> Result<Catalog> {
        Catalog::open_with(path, false)
    }

    /// Opens the catalog on RocksDB, with small buffers if `small` (the demo).
    pub fn open_with(path: &Path, small: bool) -> Result<Catalog> {
        std::fs::create_dir_all(path).map_err(|e| internal(format!("cannot create {}: {e}", path.display())))?;
        let engine = RocksEngine::open_with(path, small).map_err(internal)?;
        Catalog::on(Arc::new(engine))
    }

    /// Loads the catalog from `engine` (RocksDB, or memory for tests and
    /// in-memory coordinators).
    pub fn on(engine: Arc<dyn Engine>) -> Result<Catalog> {
        let mut tables = BTreeMap::new();
        for (k, v) in scan_prefix(engine.as_ref(), Space::Data, b"table/").map_err(internal)? {
            let def: TableDef = serde_json::from_slice(&v).map_err(|e| internal(format!("corrupt table record {}: {e}", String::from_utf8_lossy(&k))))?;
            tables.insert(def.name.clone(), Arc::new(Table::new(def)));
        }
        let mut groups = BTreeMap::new();
        for (k, v) in scan_prefix(engine.as_ref(), Space::Data, b"group/").map_err(internal)? {
            let id: ShardGroupId = std::str::from_utf8(&k[6..]).ok().and_then(|s| s.parse().ok()).ok_or_else(|| internal("corrupt shard group record"))?;
            // Records written before replication hold a bare address.
            let record = serde_json::from_slice(&v).unwrap_or_else(|_| {
                let address = String::from_utf8_lossy(&v).into_owned();
                GroupRecord { members: vec![address.clone()], primary: address, epoch: 1, mode: ReplicationMode::None, sync_replicas: 0 }
            });
            groups.insert(id, record);
        }
        let next = match engine.get(Space::Data, NEXT_TABLE_ID).map_err(internal)? {
            Some(v) => u32::from_be_bytes(v.as_slice().try_into().map_err(|_| internal("corrupt table id counter"))?),
            None => 1,
        };
        Ok(Catalog { engine, tables: RwLock::new(tables), groups: RwLock::new(groups), ddl: Mutex::new(next) })
    }

    /// The coordinator's storage engine (shared with its journal).
    pub fn engine(&self) -> Arc<dyn Engine> {
        self.engine.clone()
    }

    fn write(&self, writes: Vec<Write>) -> Result<()> {
        self.engine.apply(writes, true).map_err(internal)
    }

    /// Records the configured shard groups. A group that a table uses may
    /// change members but may not disappear. A group keeps its epoch and
    /// primary (which a failover may have moved) while the primary is still
    /// a member; otherwise its first member becomes primary in a new epoch.
    pub fn set_shard_groups(&self, configured: &[ShardGroupConfig]) -> Result<()> {
        let _ddl = self.ddl.lock().unwrap();
        for table in self.tables.read().unwrap().values() {
            if let Some(missing) = table.def.groups.iter().find(|g| !configured.iter().any(|c| c.id == **g)) {
                return Err(CoordError::Invalid(format!(
                    "shard group {missing} is used by table \"{}\" but is missing from the configuration",
                    table.def.name
                )));
            }
        }
        let existing = self.groups.read().unwrap().clone();
        let mut records = BTreeMap::new();
        for group in configured {
            let members = group.all_members();
            let replicas = members.len().saturating_sub(1) as u32;
            let (primary, epoch) = match existing.get(&group.id) {
                Some(old) if members.contains(&old.primary) => (old.primary.clone(), old.epoch),
                Some(old) => (members[0].clone(), old.epoch + 1),
                None => (members[0].clone(), 1),
            };
            let sync_replicas = match group.replication {
                ReplicationMode::Sync => group.sync_replicas.unwrap_or(replicas),
                _ => 0,
            };
            records.insert(group.id, GroupRecord { members, primary, epoch, mode: group.replication, sync_replicas });
        }
        let mut batch = Vec::new();
        for (id, record) in &records {
            batch.push(put(format!("group/{id}"), serde_json::to_vec(record).map_err(internal)?));
        }
        for id in existing.keys().filter(|id| !records.contains_key(id)) {
            batch.push(delete(format!("group/{id}")));
        }
        self.write(batch)?;
        *self.groups.write().unwrap() = records;
        Ok(())
    }

    /// Records a group's new primary and epoch (a failover or switchover),
    /// durably, before anyone routes there.
    pub fn set_primary(&self, group: ShardGroupId, primary: &str, epoch: u64) -> Result<GroupRecord> {
        let _ddl = self.ddl.lock().unwrap();
        let mut record =
            self.groups.read().unwrap().get(&group).cloned().ok_or_else(|| CoordError::Internal(format!("shard group {group} is not configured")))?;
        record.primary = primary.to_string();
        record.epoch = epoch;
        self.write(vec![put(format!("group/{group}"), serde_json::to_vec(&record).map_err(internal)?)])?;
        self.groups.write().unwrap().insert(group, record.clone());
        Ok(record)
    }

    /// Every shard group with its members, primary and epoch.
    pub fn shard_groups(&self) -> BTreeMap<ShardGroupId, GroupRecord> {
        self.groups.read().unwrap().clone()
    }

    pub fn get(&self, name: &str) -> Result<Arc<Table>> {
        self.tables.read().unwrap().get(name).cloned().ok_or_else(|| CoordError::UnknownTable(name.to_string()))
    }

    /// The table with this id, if it still exists.
    pub fn table_by_id(&self, id: u32) -> Option<Arc<Table>> {
        self.tables.read().unwrap().values().find(|t| t.def.id == id).cloned()
    }

    pub fn tables(&self) -> Vec<Arc<Table>> {
        self.tables.read().unwrap().values().cloned().collect()
    }

    /// Stores a new table, assigning its id. Ids are never reused.
    pub fn create_table(&self, mut def: TableDef, if_not_exists: bool) -> Result<Option<Arc<Table>>> {
        let mut next = self.ddl.lock().unwrap();
        if self.tables.read().unwrap().contains_key(&def.name) {
            return if if_not_exists { Ok(None) } else { Err(CoordError::TableExists(def.name)) };
        }
        def.id = *next;
        let record = serde_json::to_vec(&def).map_err(internal)?;
        self.write(vec![put(format!("table/{}", def.name), record), put(NEXT_TABLE_ID, (def.id + 1).to_be_bytes().to_vec())])?;
        *next = def.id + 1;
        let table = Arc::new(Table::new(def));
        self.tables.write().unwrap().insert(table.def.name.clone(), table.clone());
        Ok(Some(table))
    }

    /// Removes a table from the catalog; its rows become unreachable.
    pub fn drop_table(&self, name: &str) -> Result<Arc<Table>> {
        let _ddl = self.ddl.lock().unwrap();
        let table = self.get(name)?;
        self.write(vec![delete(format!("table/{name}"))])?;
        self.tables.write().unwrap().remove(name);
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ColumnDef, ColumnType, Partitioning};
    use tessera_model::data::DataType;
    use tessera_storage::crash::CrashEngine;

    fn def(name: &str) -> TableDef {
        let column = |name: &str| ColumnDef {
            name: name.into(),
            column_type: ColumnType { data_type: DataType::BigInt, max_len: None },
            nullable: false,
            default: None,
        };
        TableDef {
            id: 0,
            name: name.into(),
            columns: vec![column("id"), column("v")],
            primary_key: 0,
            checks: Vec::new(),
            partitioning: Partitioning::Hash { virtual_nodes: 8 },
            groups: vec![1, 2],
        }
    }

    fn group(id: u32, members: &[&str]) -> ShardGroupConfig {
        ShardGroupConfig {
            id,
            address: None,
            members: members.iter().map(|m| m.to_string()).collect(),
            replication: ReplicationMode::Async,
            sync_replicas: None,
        }
    }

    #[test]
    fn every_acknowledged_change_survives_a_power_loss() {
        let engine = Arc::new(CrashEngine::default());
        let catalog = Catalog::on(engine.clone()).unwrap();
        catalog.set_shard_groups(&[group(1, &["a:1", "b:1"]), group(2, &["c:1", "d:1"])]).unwrap();
        catalog.create_table(def("t1"), false).unwrap();
        catalog.create_table(def("t2"), false).unwrap();
        catalog.drop_table("t1").unwrap();
        catalog.set_primary(2, "d:1", 2).unwrap();
        assert_eq!(engine.unsynced(), 0, "catalog writes are synced before they are acknowledged");
        let reopened = Catalog::on(Arc::new(engine.crash())).unwrap();
        assert!(reopened.get("t1").is_err());
        assert_eq!(reopened.get("t2").unwrap().def.id, 2);
        let groups = reopened.shard_groups();
        assert_eq!((groups[&2].primary.as_str(), groups[&2].epoch), ("d:1", 2));
        assert_eq!(groups[&1].members, vec!["a:1".to_string(), "b:1".to_string()]);
        // Ids are never reused, across restarts too.
        assert_eq!(reopened.create_table(def("t3"), false).unwrap().unwrap().def.id, 3);
        // A group a table uses may not disappear.
        assert!(reopened.set_shard_groups(&[group(1, &["a:1"])]).is_err());
    }
}
