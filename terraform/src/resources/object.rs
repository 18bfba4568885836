//! The life cycle every resource that is one Meridian object shares:
//! validate with the model, plan (defaults, sameness, replacement), apply
//! with `expected_revision`, refresh, import by key, destroy.

use crate::admin::Admin;
use crate::diag::{self, Diag, Path};
use crate::manifest::{check_with_model, from_manifest, path_in_message, to_manifest};
use crate::schema::{Block, Field};
use crate::semantic::{check_values, differs, plan_merge, read_merge, replaced, with_defaults};
use crate::value::Value;
use meridian_model::Kind;
use meridian_proto::v1 as pb;

pub struct ObjectResource {
    pub type_name: &'static str,
    pub kind: Kind,
    pub block: Block,
}

/// The outcome of a call: a value (or null) and what to tell the user.
pub type Outcome = (Value, Vec<Diag>);

impl ObjectResource {
    fn meta(&self, value: &Value, key: &str) -> Option<String> {
        let attr = self
            .block
            .attrs
            .iter()
            .find(|a| matches!(a.field, Field::Meta(k) if k == key))?;
        value.get(attr.name).as_str().map(str::to_string)
    }

    /// The object's key; `None` while its identity is unknown.
    fn key(&self, value: &Value) -> Option<pb::ResourceKey> {
        let name = self.meta(value, "name")?;
        let namespace = if self.kind.is_namespaced() {
            self.meta(value, "namespace")
                .unwrap_or_else(|| "default".into())
        } else {
            String::new()
        };
        let cluster = if self.kind == Kind::Endpoints {
            self.meta(value, "cluster")?
        } else {
            String::new()
        };
        Some(pb::ResourceKey {
            kind: self.kind.to_string(),
            namespace,
            name,
            cluster,
        })
    }

    /// `name`, `namespace/name`, or for endpoints `namespace/name@cluster`.
    fn id(key: &pb::ResourceKey) -> String {
        let mut id = key.name.clone();
        if !key.namespace.is_empty() {
            id = format!("{}/{id}", key.namespace);
        }
        if !key.cluster.is_empty() {
            id = format!("{id}@{}", key.cluster);
        }
        id
    }

    fn parse_id(&self, id: &str) -> Result<pb::ResourceKey, String> {
        let (rest, cluster) = match (self.kind, id.rsplit_once('@')) {
            (Kind::Endpoints, Some((rest, cluster))) => (rest, cluster.to_string()),
            (Kind::Endpoints, None) => {
                return Err(format!("'{id}' is not NAMESPACE/SERVICE@CLUSTER"))
            }
            _ => (id, String::new()),
        };
        let (namespace, name) = match (self.kind.is_namespaced(), rest.split_once('/')) {
            (true, Some((ns, name))) => (ns.to_string(), name.to_string()),
            (true, None) => ("default".to_string(), rest.to_string()),
            (false, None) => (String::new(), rest.to_string()),
            (false, Some(_)) => return Err(format!("a {} has no namespace: '{id}'", self.kind)),
        };
        meridian_model::ResourceKey::new(self.kind, Some(&namespace), &name, Some(&cluster))
            .map_err(|e| e.to_string())?;
        Ok(pb::ResourceKey {
            kind: self.kind.to_string(),
            namespace,
            name,
            cluster,
        })
    }

    fn describe(&self, key: Option<&pb::ResourceKey>) -> String {
        match key {
            Some(key) => format!("{} {}", self.kind, Self::id(key)),
            None => self.kind.to_string(),
        }
    }

    fn refused(&self, what: &str, key: Option<&pb::ResourceKey>, status: &tonic::Status) -> Diag {
        let d = diag::from_status(&format!("{what} {}", self.describe(key)), status);
        match path_in_message(&self.block, status.message()) {
            Some(path) => d.at(path),
            None => d,
        }
    }

    /// Each value on its own, then, once everything is known, the whole
    /// object as the control plane would check it.
    pub fn validate(&self, config: &Value) -> Vec<Diag> {
        let diags = check_values(&self.block, config, &Path::default());
        if !diags.is_empty() {
            return diags;
        }
        let kind = self.kind.to_string();
        check_with_model(&kind, &self.block, &with_defaults(&self.block, config))
    }

    pub fn plan(&self, prior: &Value, config: &Value) -> (Value, Vec<Path>, Vec<Diag>) {
        if config.is_null() {
            return (Value::Null, Vec::new(), Vec::new());
        }
        let diags = self.validate(config);
        if diag::has_errors(&diags) {
            return (Value::Null, Vec::new(), diags);
        }
        let mut planned = plan_merge(&self.block, prior, &with_defaults(&self.block, config));
        let replace = if prior.is_null() {
            Vec::new()
        } else {
            replaced(&self.block, prior, &planned)
        };
        let unchanged =
            !prior.is_null() && replace.is_empty() && !differs(&self.block, prior, &planned);
        for attr in self.block.attrs.iter().filter(|a| a.is_computed_only()) {
            let value = if unchanged
                || (attr.field != Field::None && !prior.is_null() && replace.is_empty())
            {
                prior.get(attr.name).clone()
            } else {
                Value::Unknown
            };
            planned.set(attr.name, value);
        }
        if let Some(key) = self.key(&planned) {
            planned.set("id", Value::string(Self::id(&key)));
        }
        (planned, replace, diags)
    }

    pub async fn apply(&self, admin: &Admin, prior: &Value, planned: &Value) -> Outcome {
        if planned.is_null() {
            let Some(key) = self.key(prior) else {
                return (Value::Null, Vec::new());
            };
            let expected = prior.get("revision").as_u64().unwrap_or(0);
            let mut deleted = admin.delete(key.clone(), expected).await;
            if let Err(status) = &deleted {
                // As for writes: a revision moved only by the control plane's
                // own writes is no reason to keep the object.
                if status.code() == tonic::Code::Aborted {
                    if let Ok(Some(stored)) = admin.get(key.clone()).await {
                        let fresh = from_manifest(&self.block, &stored.manifest);
                        if !differs(&self.block, &with_defaults(&self.block, &fresh), prior) {
                            deleted = admin.delete(key.clone(), stored.revision).await;
                        }
                    }
                }
            }
            return match deleted {
                Ok(()) => (Value::Null, Vec::new()),
                Err(status) => (
                    prior.clone(),
                    vec![self.refused("Cannot delete", Some(&key), &status)],
                ),
            };
        }
        let kind = self.kind.to_string();
        let (Some(manifest), Some(key)) =
            (to_manifest(&kind, &self.block, planned), self.key(planned))
        else {
            let d = Diag::error(
                "Values still unknown at apply",
                "a value of this resource was not known when it was applied",
            );
            return (Value::Null, vec![d]);
        };
        let expected = if prior.is_null() {
            0
        } else {
            prior.get("revision").as_u64().unwrap_or(0)
        };
        let revision = match admin.put(&manifest, expected).await {
            Ok(revision) => revision,
            Err(status) if status.code() == tonic::Code::Aborted => {
                match self
                    .after_conflict(admin, &key, &manifest, prior, planned)
                    .await
                {
                    Some(revision) => revision,
                    None => return self.write_refused(prior, &key, &status),
                }
            }
            Err(status) => return self.write_refused(prior, &key, &status),
        };
        let mut state = planned.clone();
        state.set("id", Value::string(Self::id(&key)));
        state.set("revision", Value::number(revision));
        let status_unknown = self
            .block
            .attrs
            .iter()
            .any(|a| matches!(a.field, Field::Status(_)) && state.get(a.name).is_unknown());
        if status_unknown {
            let fresh = match admin.get(key.clone()).await {
                Ok(Some(stored)) => from_manifest(&self.block, &stored.manifest),
                _ => Value::Null,
            };
            for attr in self
                .block
                .attrs
                .iter()
                .filter(|a| matches!(a.field, Field::Status(_)))
            {
                state.set(attr.name, fresh.get(attr.name).clone());
            }
        }
        (state, Vec::new())
    }

    fn write_refused(
        &self,
        prior: &Value,
        key: &pb::ResourceKey,
        status: &tonic::Status,
    ) -> Outcome {
        let mut d = self.refused("Cannot write", Some(key), status);
        if prior.is_null() && status.code() == tonic::Code::Aborted {
            d.detail.push_str(&format!(
                "\nIt exists already: bring it under Terraform with `terraform import` and the id {}.",
                Self::id(key)
            ));
        }
        let state = if prior.is_null() {
            Value::Null
        } else {
            prior.clone()
        };
        (state, vec![d])
    }

    /// A write refused because the object's revision moved: its revision
    /// after all when the move changed nothing Terraform manages. Either the
    /// object already holds what was planned (a write retried on another
    /// node after its first node died, committed before it did), or only
    /// what the control plane writes itself changed (a cluster's status, as
    /// its agent reports), and the write is made again at the new revision.
    /// A change to a managed field is a concurrent edit: `None`.
    async fn after_conflict(
        &self,
        admin: &Admin,
        key: &pb::ResourceKey,
        manifest: &serde_json::Value,
        prior: &Value,
        planned: &Value,
    ) -> Option<u64> {
        let stored = admin.get(key.clone()).await.ok()??;
        let fresh = with_defaults(&self.block, &from_manifest(&self.block, &stored.manifest));
        if !differs(&self.block, &fresh, planned) {
            return Some(stored.revision);
        }
        if prior.is_null() || differs(&self.block, &fresh, prior) {
            return None;
        }
        admin.put(manifest, stored.revision).await.ok()
    }

    /// What the control plane holds now, in the terms the state used; null
    /// (so Terraform plans to create it) when it is gone.
    pub async fn read(&self, admin: &Admin, current: &Value) -> Outcome {
        let Some(key) = self.key(current) else {
            return (current.clone(), Vec::new());
        };
        match admin.get(key.clone()).await {
            Ok(None) => (Value::Null, Vec::new()),
            Ok(Some(stored)) => {
                let fresh = self.fresh(&key, &stored);
                (read_merge(&self.block, current, &fresh), Vec::new())
            }
            Err(status) => (
                current.clone(),
                vec![self.refused("Cannot read", Some(&key), &status)],
            ),
        }
    }

    fn fresh(&self, key: &pb::ResourceKey, stored: &crate::admin::Stored) -> Value {
        let mut fresh = with_defaults(&self.block, &from_manifest(&self.block, &stored.manifest));
        fresh.set("id", Value::string(Self::id(key)));
        fresh.set("revision", Value::number(stored.revision));
        fresh
    }

    pub async fn import(&self, admin: &Admin, id: &str) -> Outcome {
        let key = match self.parse_id(id) {
            Ok(key) => key,
            Err(reason) => {
                return (
                    Value::Null,
                    vec![Diag::error(format!("Cannot import '{id}'"), reason)],
                )
            }
        };
        match admin.get(key.clone()).await {
            Ok(Some(stored)) => (self.fresh(&key, &stored), Vec::new()),
            Ok(None) => (
                Value::Null,
                vec![Diag::error(
                    format!("Cannot import {}", self.describe(Some(&key))),
                    "it does not exist on the control plane",
                )],
            ),
            Err(status) => (
                Value::Null,
                vec![self.refused("Cannot import", Some(&key), &status)],
            ),
        }
    }

    /// Reads the object for a data source: the same values the resource has.
    pub async fn lookup(&self, admin: &Admin, config: &Value) -> Outcome {
        let Some(key) = self.key(&with_defaults(&self.block, config)) else {
            return (
                Value::Null,
                vec![Diag::error(
                    "Unknown name",
                    "the name must be known to read the object",
                )],
            );
        };
        match admin.get(key.clone()).await {
            Ok(Some(stored)) => (self.fresh(&key, &stored), Vec::new()),
            Ok(None) => (
                Value::Null,
                vec![Diag::error(
                    format!("{} not found", self.describe(Some(&key))),
                    "the control plane has no such object",
                )],
            ),
            Err(status) => (
                Value::Null,
                vec![self.refused("Cannot read", Some(&key), &status)],
            ),
        }
    }
}
