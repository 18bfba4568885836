//! `TrafficSplit`: a weighted split of one service's traffic across backend services.

use crate::{names::parse_service_ref, ModelError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficSplitSpec {
    /// The service whose traffic is split, `namespace/name`.
    pub service: String,
    pub backends: Vec<SplitBackend>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SplitBackend {
    pub service: String,
    pub weight: u32,
}

impl TrafficSplitSpec {
    /// Checks the split on its own; `namespace` is the split's namespace, the
    /// default for unqualified references. Returns the resolved
    /// (service, backends) references.
    pub fn validate(&self, namespace: &str) -> Result<Vec<(String, String)>, ModelError> {
        let target = parse_service_ref("spec.service", &self.service, namespace)?;
        if self.backends.is_empty() {
            return Err(ModelError::invalid(
                "spec.backends",
                "needs at least one backend",
            ));
        }
        let mut refs = vec![target.clone()];
        let mut seen = BTreeSet::new();
        for (i, backend) in self.backends.iter().enumerate() {
            let field = format!("spec.backends[{i}].service");
            let resolved = parse_service_ref(&field, &backend.service, namespace)?;
            if resolved == target {
                return Err(ModelError::invalid(
                    field,
                    format!("the split of {} refers to itself", self.service),
                ));
            }
            if !seen.insert(resolved.clone()) {
                return Err(ModelError::invalid(
                    field,
                    format!("{} is listed twice", backend.service),
                ));
            }
            refs.push(resolved);
        }
        if self.backends.iter().all(|b| b.weight == 0) {
            return Err(ModelError::invalid(
                "spec.backends[].weight",
                "every backend has weight 0; at least one must be positive",
            ));
        }
        Ok(refs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(service: &str, backends: &[(&str, u32)]) -> TrafficSplitSpec {
        TrafficSplitSpec {
            service: service.into(),
            backends: backends
                .iter()
                .map(|(s, w)| SplitBackend {
                    service: s.to_string(),
                    weight: *w,
                })
                .collect(),
        }
    }

    #[test]
    fn resolves_references() {
        let refs = split("shop/checkout", &[("checkout-v1", 90), ("other/v2", 10)])
            .validate("shop")
            .expect("valid");
        assert_eq!(refs[1], ("shop".into(), "checkout-v1".into()));
        assert_eq!(refs[2], ("other".into(), "v2".into()));
    }

    #[test]
    fn rejects_self_reference_and_zero_weights() {
        let err = split("shop/checkout", &[("checkout", 1)])
            .validate("shop")
            .expect_err("self");
        assert!(
            err.to_string().contains("spec.backends[0].service"),
            "{err}"
        );
        let err = split("checkout", &[("a", 0), ("b", 0)])
            .validate("shop")
            .expect_err("zero");
        assert!(err.to_string().contains("weight"), "{err}");
        assert!(split("checkout", &[]).validate("shop").is_err());
    }
}
