//! The identity of a stored resource and its byte encoding in storage.

use crate::{names::check_label, Kind, ModelError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies one object: kind, namespace (empty for clusters), name, and for
/// `Endpoints` the member cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResourceKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub cluster: String,
}

pub const DEFAULT_NAMESPACE: &str = "default";

impl ResourceKey {
    /// Builds a key from loosely given parts, applying defaults and name rules.
    pub fn new(
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        cluster: Option<&str>,
    ) -> Result<Self, ModelError> {
        check_label("metadata.name", name)?;
        let namespace = if kind.is_namespaced() {
            let ns = namespace
                .filter(|ns| !ns.is_empty())
                .unwrap_or(DEFAULT_NAMESPACE);
            check_label("metadata.namespace", ns)?;
            ns.to_string()
        } else {
            if namespace.is_some_and(|ns| !ns.is_empty()) {
                return Err(ModelError::invalid(
                    "metadata.namespace",
                    format!("{kind} is not namespaced"),
                ));
            }
            String::new()
        };
        let cluster = match (kind, cluster.filter(|c| !c.is_empty())) {
            (Kind::Endpoints, Some(c)) => {
                check_label("metadata.cluster", c)?;
                c.to_string()
            }
            (Kind::Endpoints, None) => {
                return Err(ModelError::invalid(
                    "metadata.cluster",
                    "Endpoints must name the cluster they belong to",
                ))
            }
            (_, Some(_)) => {
                return Err(ModelError::invalid(
                    "metadata.cluster",
                    format!("only Endpoints carry a cluster, not {kind}"),
                ))
            }
            (_, None) => String::new(),
        };
        Ok(ResourceKey {
            kind,
            namespace,
            name: name.to_string(),
            cluster,
        })
    }

    /// Storage encoding; sorts by kind, then namespace, then name, then cluster.
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "{}/{}/{}/{}",
            self.kind, self.namespace, self.name, self.cluster
        )
        .into_bytes()
    }

    /// The storage prefix of every key of a kind (and optionally a namespace).
    pub fn prefix(kind: Kind, namespace: Option<&str>) -> Vec<u8> {
        match namespace {
            Some(ns) => format!("{kind}/{ns}/").into_bytes(),
            None => format!("{kind}/").into_bytes(),
        }
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.splitn(4, '/');
        let kind = parts.next()?.parse().ok()?;
        Some(ResourceKey {
            kind,
            namespace: parts.next()?.to_string(),
            name: parts.next()?.to_string(),
            cluster: parts.next()?.to_string(),
        })
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.kind)?;
        if !self.namespace.is_empty() {
            write!(f, "{}/", self.namespace)?;
        }
        write!(f, "{}", self.name)?;
        if !self.cluster.is_empty() {
            write!(f, " in cluster {}", self.cluster)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_round_trips() {
        let key = ResourceKey::new(
            Kind::Endpoints,
            Some("shop"),
            "checkout",
            Some("us-east-1a"),
        )
        .expect("valid");
        assert_eq!(ResourceKey::decode(&key.encode()), Some(key));
        let key = ResourceKey::new(Kind::Cluster, None, "us-east-1a", None).expect("valid");
        assert_eq!(ResourceKey::decode(&key.encode()), Some(key));
    }

    #[test]
    fn defaults_and_rules() {
        let key = ResourceKey::new(Kind::Service, None, "checkout", None).expect("valid");
        assert_eq!(key.namespace, "default");
        assert!(ResourceKey::new(Kind::Cluster, Some("shop"), "c", None).is_err());
        assert!(ResourceKey::new(Kind::Endpoints, Some("shop"), "c", None).is_err());
        assert!(ResourceKey::new(Kind::Service, Some("shop"), "c", Some("x")).is_err());
    }
}
