//! The control's crash-safe store: one redb file in the data directory,
//! tables `apps` (id → app JSON), `tasks` (id → task JSON) and `meta`
//! (`"meta"` → sequence numbers, VIP allocations, deployments), `accounts`
//! (uid → account JSON) and `agent_credentials` (agent id → SHA-256 of its
//! secret). Every change
//! of the cluster is committed (and fsynced) before the API answers, so a
//! restart loses nothing that was acknowledged. A record that does not parse
//! stops the control with its table and key named: starting without it would
//! kill its tasks.
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};

use crate::cluster::{Cluster, Dirty, Meta, TaskRecord};
use crate::marathon::app::App;

const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
const AGENT_CREDENTIALS: TableDefinition<&str, &[u8]> = TableDefinition::new("agent_credentials");

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {message}")]
    Db { path: PathBuf, message: String },
    #[error("store {path} is open in another process (a running garrison-control?)")]
    Locked { path: PathBuf },
    #[error("store {path}: table {table}, key {key:?} does not parse: {message}")]
    Corrupt {
        path: PathBuf,
        table: &'static str,
        key: String,
        message: String,
    },
}

/// The open store (shared: redb serialises its writers).
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) `<dir>/control.redb`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join("control.redb");
        let db_err = |e: &dyn std::fmt::Display| StoreError::Db {
            path: path.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| db_err(&e))?;
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: path.clone() },
            e => db_err(&e),
        })?;
        let txn = db.begin_write().map_err(|e| db_err(&e))?;
        for t in [APPS, TASKS, META, ACCOUNTS, AGENT_CREDENTIALS] {
            txn.open_table(t).map_err(|e| db_err(&e))?;
        }
        txn.commit().map_err(|e| db_err(&e))?;
        Ok(Store { db, path })
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Everything stored.
    pub fn load(&self) -> Result<(Vec<App>, Vec<TaskRecord>, Meta), StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let apps = self.read_all(&txn, APPS, "apps")?;
        let tasks = self.read_all(&txn, TASKS, "tasks")?;
        let meta: Vec<Meta> = self.read_all(&txn, META, "meta")?;
        Ok((apps, tasks, meta.into_iter().next().unwrap_or_default()))
    }

    fn read_all<T: serde::de::DeserializeOwned>(
        &self,
        txn: &redb::ReadTransaction,
        def: TableDefinition<&str, &[u8]>,
        name: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        let table = txn.open_table(def).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let value = serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                table: name,
                key: k.value().to_string(),
                message: e.to_string(),
            })?;
            out.push(value);
        }
        Ok(out)
    }

    /// Every account.
    pub fn load_accounts(&self) -> Result<Vec<crate::auth::accounts::Account>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        self.read_all(&txn, ACCOUNTS, "accounts")
    }

    /// Every agent credential.
    pub fn load_agent_credentials(&self) -> Result<Vec<crate::auth::AgentCredential>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        self.read_all(&txn, AGENT_CREDENTIALS, "agent_credentials")
    }

    pub fn put_account(&self, a: &crate::auth::accounts::Account) -> Result<(), StoreError> {
        self.put_one(
            ACCOUNTS,
            &a.uid,
            &serde_json::to_vec(a).expect("serialisable"),
        )
    }

    pub fn delete_account(&self, uid: &str) -> Result<(), StoreError> {
        self.delete_one(ACCOUNTS, uid)
    }

    pub fn put_agent_credential(&self, c: &crate::auth::AgentCredential) -> Result<(), StoreError> {
        self.put_one(
            AGENT_CREDENTIALS,
            &c.agent_id,
            &serde_json::to_vec(c).expect("serialisable"),
        )
    }

    pub fn delete_agent_credential(&self, agent_id: &str) -> Result<(), StoreError> {
        self.delete_one(AGENT_CREDENTIALS, agent_id)
    }

    fn put_one(
        &self,
        def: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &[u8],
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.open_table(def)
            .map_err(|e| self.err(e))?
            .insert(key, value)
            .map_err(|e| self.err(e))?;
        txn.commit().map_err(|e| self.err(e))
    }

    fn delete_one(&self, def: TableDefinition<&str, &[u8]>, key: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.open_table(def)
            .map_err(|e| self.err(e))?
            .remove(key)
            .map_err(|e| self.err(e))?;
        txn.commit().map_err(|e| self.err(e))
    }

    /// Writes what `dirty` names, in one transaction.
    pub fn commit(&self, cluster: &Cluster, dirty: &Dirty) -> Result<(), StoreError> {
        if dirty == &Dirty::default() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut apps = txn.open_table(APPS).map_err(|e| self.err(e))?;
            for id in &dirty.apps {
                match cluster.apps.get(id) {
                    Some(app) => {
                        let bytes = serde_json::to_vec(app).expect("serialisable");
                        apps.insert(id.as_str(), bytes.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    None => {
                        apps.remove(id.as_str()).map_err(|e| self.err(e))?;
                    }
                }
            }
            let mut tasks = txn.open_table(TASKS).map_err(|e| self.err(e))?;
            for id in &dirty.tasks {
                match cluster.tasks.get(id) {
                    Some(t) => {
                        let bytes = serde_json::to_vec(t).expect("serialisable");
                        tasks
                            .insert(id.as_str(), bytes.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    None => {
                        tasks.remove(id.as_str()).map_err(|e| self.err(e))?;
                    }
                }
            }
            if dirty.meta {
                let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
                let bytes = serde_json::to_vec(&cluster.meta).expect("serialisable");
                meta.insert("meta", bytes.as_slice())
                    .map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterConfig;
    use crate::marathon::app::parse_app;

    #[test]
    fn a_reopened_store_has_what_was_committed() {
        let dir = std::env::temp_dir().join(format!("garrison-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = Store::open(&dir).unwrap();
            let mut c = Cluster::restore(
                ClusterConfig::default(),
                vec![],
                vec![],
                Meta::default(),
                1,
                0,
            );
            let app = parse_app(br#"{"id":"/a","cmd":"x","portDefinitions":[{"port":0,"labels":{"VIP_0":"/a:80"}}]}"#, None).unwrap();
            c.create_app(app, 0).unwrap();
            c.tick(0);
            let dirty = c.take_dirty();
            store.commit(&c, &dirty).unwrap();
            c.delete_app("/a", 1).unwrap();
            c.create_app(parse_app(br#"{"id":"/b","cmd":"y"}"#, None).unwrap(), 1)
                .unwrap();
            let dirty = c.take_dirty();
            store.commit(&c, &dirty).unwrap();
        }
        let store = Store::open(&dir).unwrap();
        let (apps, tasks, meta) = store.load().unwrap();
        assert_eq!(
            apps.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            vec!["/b"]
        );
        assert!(tasks.is_empty());
        assert!(meta.seq >= 2);
        assert!(
            meta.vip_allocations
                .contains_key("a.marathon.l4lb.thisdcos.directory")
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Every value of `table`, as stored.
    fn raw(store: &Store, table: TableDefinition<&str, &[u8]>) -> Vec<String> {
        let txn = store.db.begin_read().unwrap();
        let t = txn.open_table(table).unwrap();
        t.iter()
            .unwrap()
            .map(|item| String::from_utf8(item.unwrap().1.value().to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn a_store_written_before_the_wire_was_typed_loads_and_writes_back_the_same() {
        use crate::cluster::tests::string_typed;
        let dir = std::env::temp_dir().join(format!("garrison-store-old-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        // The records as the string-typed control stored them.
        let (apps, tasks, meta) = (
            string_typed("APP"),
            string_typed("TASK"),
            string_typed("META"),
        );
        let txn = store.db.begin_write().unwrap();
        for (def, key_of, records) in [
            (APPS, "id", &apps),
            (TASKS, "id", &tasks),
            (META, "", &meta),
        ] {
            let mut table = txn.open_table(def).unwrap();
            for r in records.iter() {
                let v: serde_json::Value = serde_json::from_str(r).unwrap();
                let key = v.get(key_of).and_then(|k| k.as_str()).unwrap_or("meta");
                table.insert(key, r.as_bytes()).unwrap();
            }
        }
        txn.commit().unwrap();

        let (loaded_apps, loaded_tasks, loaded_meta) = store.load().unwrap();
        assert_eq!(loaded_tasks.len(), tasks.len());
        let killing = loaded_tasks.iter().find(|t| t.is_killing()).unwrap();
        assert_eq!(killing.ip, std::net::IpAddr::from([10, 0, 0, 1]));
        // Everything rewritten: the same bytes.
        let c = Cluster::restore(
            ClusterConfig::default(),
            loaded_apps,
            loaded_tasks,
            loaded_meta,
            1,
            0,
        );
        let dirty = Dirty {
            apps: c.apps.keys().cloned().collect(),
            tasks: c.tasks.keys().cloned().collect(),
            meta: true,
        };
        store.commit(&c, &dirty).unwrap();
        assert_eq!(raw(&store, APPS), apps);
        assert_eq!(raw(&store, TASKS), tasks);
        assert_eq!(raw(&store, META), meta);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
