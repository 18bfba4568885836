//! Reads of the applied resources straight from RocksDB. A read that fails
//! (an I/O error, a stored value that does not parse) is not "absent": the
//! view remembers it, so the apply path can stop with a storage error
//! instead of planning differently from every other replica.

use super::store::{cf, CF_RESOURCES};
use meridian_model::{Kind, Resource, ResourceKey, StateView};
use rocksdb::DB;
use std::sync::{Arc, Mutex};

pub struct DbView {
    db: Arc<DB>,
    /// The first read that failed, if any.
    failure: Mutex<Option<String>>,
}

impl DbView {
    pub fn new(db: Arc<DB>) -> Self {
        DbView {
            db,
            failure: Mutex::new(None),
        }
    }

    /// Takes the first read failure since the last call.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn failed(&self, what: String) {
        tracing::error!(error = %what, "reading the state machine failed");
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        failure.get_or_insert(what);
    }

    fn decode(&self, key: &[u8], bytes: &[u8]) -> Option<Resource> {
        match serde_json::from_slice(bytes) {
            Ok(resource) => Some(resource),
            Err(e) => {
                self.failed(format!(
                    "the stored resource {} does not parse: {e}",
                    String::from_utf8_lossy(key)
                ));
                None
            }
        }
    }

    /// Every resource whose key starts with `prefix`; stops at the first
    /// read that fails (and remembers it).
    pub fn list_prefix(&self, prefix: &[u8]) -> Vec<Resource> {
        let mut resources = Vec::new();
        for item in self
            .db
            .prefix_iterator_cf(cf(&self.db, CF_RESOURCES), prefix)
        {
            let (key, value) = match item {
                Ok(pair) => pair,
                Err(e) => {
                    self.failed(format!("listing resources: {e}"));
                    break;
                }
            };
            if !key.starts_with(prefix) {
                break;
            }
            resources.extend(self.decode(&key, &value));
        }
        resources
    }
}

impl StateView for DbView {
    fn get(&self, key: &ResourceKey) -> Option<Resource> {
        let encoded = key.encode();
        match self.db.get_cf(cf(&self.db, CF_RESOURCES), &encoded) {
            Ok(Some(bytes)) => self.decode(&encoded, &bytes),
            Ok(None) => None,
            Err(e) => {
                self.failed(format!("reading {key}: {e}"));
                None
            }
        }
    }

    fn list(&self, kind: Kind) -> Vec<Resource> {
        self.list_prefix(&ResourceKey::prefix(kind, None))
    }
}
