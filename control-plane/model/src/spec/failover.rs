//! `FailoverPolicy`: for one service, the order in which clusters take over
//! when the local locality's healthy share drops.

use crate::{
    names::{check_label, parse_service_ref},
    ModelError,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Envoy's default overprovisioning factor.
pub const DEFAULT_OVERPROVISIONING_FACTOR: f64 = 1.4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailoverPolicySpec {
    pub service: String,
    /// Clusters, in the order they take over after the proxy's own zone and region.
    pub order: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overprovisioning_factor: Option<f64>,
    /// The healthy share of a priority below which traffic spills to the next
    /// one. Another way to say `1 / overprovisioningFactor`; give one or the other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spill_below_healthy_share: Option<f64>,
}

impl FailoverPolicySpec {
    /// Returns the resolved service reference.
    pub fn validate(&self, namespace: &str) -> Result<(String, String), ModelError> {
        let service = parse_service_ref("spec.service", &self.service, namespace)?;
        if self.order.is_empty() {
            return Err(ModelError::invalid(
                "spec.order",
                "needs at least one cluster",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, cluster) in self.order.iter().enumerate() {
            let field = format!("spec.order[{i}]");
            check_label(&field, cluster)?;
            if !seen.insert(cluster) {
                return Err(ModelError::invalid(
                    field,
                    format!("cluster '{cluster}' appears twice; a failover order cannot loop"),
                ));
            }
        }
        match (self.overprovisioning_factor, self.spill_below_healthy_share) {
            (Some(_), Some(_)) => {
                return Err(ModelError::invalid(
                    "spec.spillBelowHealthyShare",
                    "give either overprovisioningFactor or spillBelowHealthyShare, not both",
                ))
            }
            (Some(f), None) if !(1.0..=100.0).contains(&f) => {
                return Err(ModelError::invalid(
                    "spec.overprovisioningFactor",
                    format!("{f} must be between 1.0 and 100.0"),
                ))
            }
            (None, Some(s)) if !(s > 0.0 && s <= 1.0) => {
                return Err(ModelError::invalid(
                    "spec.spillBelowHealthyShare",
                    format!("{s} must be greater than 0 and at most 1"),
                ))
            }
            _ => {}
        }
        Ok(service)
    }

    /// The overprovisioning factor this policy asks for.
    pub fn effective_overprovisioning_factor(&self) -> f64 {
        match (self.overprovisioning_factor, self.spill_below_healthy_share) {
            (Some(f), _) => f,
            (None, Some(share)) => 1.0 / share,
            (None, None) => DEFAULT_OVERPROVISIONING_FACTOR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(order: &[&str], factor: Option<f64>, share: Option<f64>) -> FailoverPolicySpec {
        FailoverPolicySpec {
            service: "shop/checkout".into(),
            order: order.iter().map(|s| s.to_string()).collect(),
            overprovisioning_factor: factor,
            spill_below_healthy_share: share,
        }
    }

    #[test]
    fn checks_order_and_factor() {
        assert!(policy(&["a", "b"], Some(1.4), None)
            .validate("shop")
            .is_ok());
        assert!(policy(&["a", "a"], None, None).validate("shop").is_err());
        assert!(policy(&[], None, None).validate("shop").is_err());
        assert!(policy(&["a"], Some(0.5), None).validate("shop").is_err());
        assert!(policy(&["a"], Some(1.4), Some(0.7))
            .validate("shop")
            .is_err());
        assert!(policy(&["a"], None, Some(0.0)).validate("shop").is_err());
    }

    #[test]
    fn effective_factor() {
        assert_eq!(
            policy(&["a"], None, None).effective_overprovisioning_factor(),
            1.4
        );
        assert_eq!(
            policy(&["a"], None, Some(0.5)).effective_overprovisioning_factor(),
            2.0
        );
    }
}
