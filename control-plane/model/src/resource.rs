//! A typed resource: metadata plus the spec of its kind.

use crate::{
    key::ResourceKey,
    manifest::Manifest,
    spec::{
        BootstrapTokenSpec, ClusterSpec, EndpointsSpec, FailoverPolicySpec, ServiceSpec,
        TrafficSplitSpec,
    },
    Kind, Metadata, ModelError,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Manifest", into = "Manifest")]
pub struct Resource {
    pub metadata: Metadata,
    pub spec: Spec,
    /// What the control plane observed about the object (clusters only, for now).
    pub status: Option<Status>,
}

/// The observed state of a member cluster's discovery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Status {
    /// No agent has reported for longer than the grace period; the
    /// cluster's endpoints are kept as they were.
    #[serde(default)]
    pub stale: bool,
    /// The agent that last synchronised the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The agent's discovery source is failing; its last good view is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_error: Option<String>,
    /// Endpoints of the agent's last batch that were invalid on their own
    /// (an address that is no IP, a zone that is no label) and were left
    /// out; the rest were taken.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub invalid_endpoints: u32,
    /// Why the first of them was left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_endpoint_reason: Option<String>,
    /// The agent's current session: the log index of the entry that began it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub session: u64,
    /// The last batch applied from that session.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u64,
}

fn is_zero<N: Default + PartialEq>(n: &N) -> bool {
    *n == N::default()
}

#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    Cluster(ClusterSpec),
    Service(ServiceSpec),
    Endpoints(EndpointsSpec),
    TrafficSplit(TrafficSplitSpec),
    FailoverPolicy(FailoverPolicySpec),
    BootstrapToken(BootstrapTokenSpec),
}

impl Spec {
    pub fn kind(&self) -> Kind {
        match self {
            Spec::Cluster(_) => Kind::Cluster,
            Spec::Service(_) => Kind::Service,
            Spec::Endpoints(_) => Kind::Endpoints,
            Spec::TrafficSplit(_) => Kind::TrafficSplit,
            Spec::FailoverPolicy(_) => Kind::FailoverPolicy,
            Spec::BootstrapToken(_) => Kind::BootstrapToken,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let value = match self {
            Spec::Cluster(s) => serde_json::to_value(s),
            Spec::Service(s) => serde_json::to_value(s),
            Spec::Endpoints(s) => serde_json::to_value(s),
            Spec::TrafficSplit(s) => serde_json::to_value(s),
            Spec::FailoverPolicy(s) => serde_json::to_value(s),
            Spec::BootstrapToken(s) => serde_json::to_value(s),
        };
        // Plain structs of strings and numbers always serialise.
        value.unwrap_or(serde_json::Value::Null)
    }
}

impl Resource {
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }

    /// The key; metadata was normalised when the resource was built, so this cannot fail.
    pub fn key(&self) -> ResourceKey {
        ResourceKey {
            kind: self.kind(),
            namespace: self.metadata.namespace.clone().unwrap_or_default(),
            name: self.metadata.name.clone(),
            cluster: self.metadata.cluster.clone().unwrap_or_default(),
        }
    }

    pub fn revision(&self) -> u64 {
        self.metadata.revision.unwrap_or(0)
    }

    /// Parses and validates everything that needs no other resource.
    pub fn from_manifest(manifest: Manifest) -> Result<Self, ModelError> {
        let kind: Kind = manifest.kind.parse()?;
        let mut metadata: Metadata = from_value("metadata", manifest.metadata)?;
        let key = ResourceKey::new(
            kind,
            metadata.namespace.as_deref(),
            &metadata.name,
            metadata.cluster.as_deref(),
        )?;
        metadata.namespace = Some(key.namespace.clone()).filter(|ns| !ns.is_empty());
        metadata.cluster = Some(key.cluster.clone()).filter(|c| !c.is_empty());
        for label in metadata.labels.keys() {
            if label.is_empty() || label.len() > 253 {
                return Err(ModelError::invalid(
                    "metadata.labels",
                    format!("bad label key '{label}'"),
                ));
            }
        }
        let spec = match kind {
            Kind::Cluster => Spec::Cluster(from_value("spec", manifest.spec)?),
            Kind::Service => Spec::Service(from_value("spec", manifest.spec)?),
            Kind::Endpoints => Spec::Endpoints(from_value("spec", manifest.spec)?),
            Kind::TrafficSplit => Spec::TrafficSplit(from_value("spec", manifest.spec)?),
            Kind::FailoverPolicy => Spec::FailoverPolicy(from_value("spec", manifest.spec)?),
            Kind::BootstrapToken => Spec::BootstrapToken(from_value("spec", manifest.spec)?),
        };
        let status = match manifest.status {
            serde_json::Value::Null => None,
            value => Some(from_value("status", value)?),
        };
        let resource = Resource {
            metadata,
            spec,
            status,
        };
        resource.validate()?;
        Ok(resource)
    }

    fn validate(&self) -> Result<(), ModelError> {
        let namespace = self.metadata.namespace.as_deref().unwrap_or_default();
        match &self.spec {
            Spec::Cluster(s) => s.validate(),
            Spec::Service(s) => s.validate(),
            Spec::Endpoints(s) => s.validate(),
            Spec::TrafficSplit(s) => s.validate(namespace).map(drop),
            Spec::FailoverPolicy(s) => s.validate(namespace).map(drop),
            Spec::BootstrapToken(s) => s.validate(),
        }
    }

    pub fn to_manifest(&self) -> Manifest {
        Manifest {
            kind: self.kind().to_string(),
            metadata: serde_json::to_value(&self.metadata).unwrap_or(serde_json::Value::Null),
            spec: self.spec.to_json(),
            status: self
                .status
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok())
                .unwrap_or(serde_json::Value::Null),
        }
    }

    /// Equal apart from the revision: writing it again would change nothing.
    pub fn same_content(&self, other: &Resource) -> bool {
        let mut a = self.metadata.clone();
        a.revision = other.metadata.revision;
        a == other.metadata && self.spec == other.spec
    }
}

impl TryFrom<Manifest> for Resource {
    type Error = ModelError;

    fn try_from(manifest: Manifest) -> Result<Self, Self::Error> {
        Resource::from_manifest(manifest)
    }
}

impl From<Resource> for Manifest {
    fn from(resource: Resource) -> Self {
        resource.to_manifest()
    }
}

/// Deserialises with the path of the offending field in the error.
fn from_value<T: DeserializeOwned>(
    prefix: &str,
    value: serde_json::Value,
) -> Result<T, ModelError> {
    if value.is_null() {
        return Err(ModelError::invalid(prefix, "is missing"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            prefix.to_string()
        } else {
            format!("{prefix}.{path}")
        };
        ModelError::invalid(field, e.into_inner().to_string())
    })
}
