//! The catalog's durable store: JSON records in RocksDB, written with a
//! synced WAL, and an in-memory cache that serves every lookup.
//!
//! Keys: `table/<name>` -> TableDef, `meta/next_table_id` -> u32,
//! `group/<id>` -> address.

use super::schema::{ShardGroupId, Table, TableDef};
use crate::config::ShardGroupConfig;
use crate::error::{CoordError, Result};
use rocksdb::{WriteBatch, WriteOptions, DB};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

pub struct Catalog {
    db: Arc<DB>,
    tables: RwLock<BTreeMap<String, Arc<Table>>>,
    groups: RwLock<BTreeMap<ShardGroupId, String>>,
    /// Serializes DDL so ids and names stay unique.
    ddl: Mutex<u32>,
}

const NEXT_TABLE_ID: &[u8] = b"meta/next_table_id";

fn internal(e: impl std::fmt::Display) -> CoordError {
    CoordError::Internal(format!("catalog: {e}"))
}

impl Catalog {
    /// Opens the catalog at `path` and loads every table and shard group.
    pub fn open(path: &Path) -> Result<Catalog> {
        std::fs::create_dir_all(path).map_err(|e| internal(format!("cannot create {}: {e}", path.display())))?;
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        let db = DB::open(&options, path).map_err(|e| internal(format!("cannot open {}: {e}", path.display())))?;
        let mut tables = BTreeMap::new();
        for item in db.prefix_iterator(b"table/") {
            let (k, v) = item.map_err(internal)?;
            if !k.starts_with(b"table/") {
                break;
            }
            let def: TableDef = serde_json::from_slice(&v).map_err(|e| internal(format!("corrupt table record {}: {e}", String::from_utf8_lossy(&k))))?;
            tables.insert(def.name.clone(), Arc::new(Table::new(def)));
        }
        let mut groups = BTreeMap::new();
        for item in db.prefix_iterator(b"group/") {
            let (k, v) = item.map_err(internal)?;
            if !k.starts_with(b"group/") {
                break;
            }
            let id: ShardGroupId = std::str::from_utf8(&k[6..]).ok().and_then(|s| s.parse().ok()).ok_or_else(|| internal("corrupt shard group record"))?;
            groups.insert(id, String::from_utf8_lossy(&v).into_owned());
        }
        let next = match db.get(NEXT_TABLE_ID).map_err(internal)? {
            Some(v) => u32::from_be_bytes(v.as_slice().try_into().map_err(|_| internal("corrupt table id counter"))?),
            None => 1,
        };
        Ok(Catalog { db: Arc::new(db), tables: RwLock::new(tables), groups: RwLock::new(groups), ddl: Mutex::new(next) })
    }

    /// The coordinator's database (shared with the 2PC decision log).
    pub fn db(&self) -> Arc<DB> {
        self.db.clone()
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options).map_err(internal)
    }

    /// Records the configured shard groups. A group that a table uses may
    /// change address but may not disappear.
    pub fn set_shard_groups(&self, configured: &[ShardGroupConfig]) -> Result<()> {
        let _ddl = self.ddl.lock().unwrap();
        let configured_ids: BTreeMap<ShardGroupId, String> = configured.iter().map(|g| (g.id, g.address.clone())).collect();
        for table in self.tables.read().unwrap().values() {
            if let Some(missing) = table.def.groups.iter().find(|g| !configured_ids.contains_key(g)) {
                return Err(CoordError::Invalid(format!(
                    "shard group {missing} is used by table \"{}\" but is missing from the configuration",
                    table.def.name
                )));
            }
        }
        let mut batch = WriteBatch::default();
        for (id, address) in &configured_ids {
            batch.put(format!("group/{id}"), address.as_bytes());
        }
        for id in self.groups.read().unwrap().keys().filter(|id| !configured_ids.contains_key(id)) {
            batch.delete(format!("group/{id}"));
        }
        self.write(batch)?;
        *self.groups.write().unwrap() = configured_ids;
        Ok(())
    }

    /// Shard group ids and addresses.
    pub fn shard_groups(&self) -> BTreeMap<ShardGroupId, String> {
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
        let mut batch = WriteBatch::default();
        batch.put(format!("table/{}", def.name), record);
        batch.put(NEXT_TABLE_ID, (def.id + 1).to_be_bytes());
        self.write(batch)?;
        *next = def.id + 1;
        let table = Arc::new(Table::new(def));
        self.tables.write().unwrap().insert(table.def.name.clone(), table.clone());
        Ok(Some(table))
    }

    /// Removes a table from the catalog; its rows become unreachable.
    pub fn drop_table(&self, name: &str) -> Result<Arc<Table>> {
        let _ddl = self.ddl.lock().unwrap();
        let table = self.get(name)?;
        let mut batch = WriteBatch::default();
        batch.delete(format!("table/{name}"));
        self.write(batch)?;
        self.tables.write().unwrap().remove(name);
        Ok(table)
    }
}
