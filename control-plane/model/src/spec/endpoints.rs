//! `Endpoints`: the endpoint set of one service in one cluster.

use crate::{names::check_label, ModelError};
use serde::{Deserialize, Serialize};
use std::{collections::BTreeSet, net::IpAddr};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointsSpec {
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    pub address: String,
    pub port: u16,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default)]
    pub health: Health,
}

fn default_weight() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    #[default]
    Healthy,
    Unhealthy,
    Draining,
}

impl Health {
    pub fn as_str(&self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Draining => "draining",
        }
    }
}

/// Upper bound on one endpoint's weight, as in Envoy (uint32 sum must not overflow).
pub const MAX_ENDPOINT_WEIGHT: u32 = 1_000_000;

impl Endpoint {
    /// Checks the endpoint on its own; `field` names its fields in errors.
    fn check(&self, field: &dyn Fn(&str) -> String) -> Result<IpAddr, ModelError> {
        let ip: IpAddr = self.address.parse().map_err(|_| {
            ModelError::invalid(
                field("address"),
                format!("'{}' is not an IP address", self.address),
            )
        })?;
        if self.port == 0 {
            return Err(ModelError::invalid(
                field("port"),
                "must be between 1 and 65535",
            ));
        }
        if self.weight > MAX_ENDPOINT_WEIGHT {
            return Err(ModelError::invalid(
                field("weight"),
                format!(
                    "{} exceeds the maximum of {MAX_ENDPOINT_WEIGHT}",
                    self.weight
                ),
            ));
        }
        if let Some(zone) = &self.zone {
            check_label(&field("zone"), zone)?;
        }
        Ok(ip)
    }
}

impl EndpointsSpec {
    pub fn validate(&self) -> Result<(), ModelError> {
        let mut seen = BTreeSet::new();
        for (i, ep) in self.endpoints.iter().enumerate() {
            let field = |f: &str| format!("spec.endpoints[{i}].{f}");
            let ip = ep.check(&field)?;
            if !seen.insert((ip, ep.port)) {
                return Err(ModelError::invalid(
                    field("address"),
                    format!("{}:{} is listed twice", ep.address, ep.port),
                ));
            }
        }
        if !self.endpoints.is_empty() && self.endpoints.iter().all(|ep| ep.weight == 0) {
            return Err(ModelError::invalid(
                "spec.endpoints[].weight",
                "every endpoint has weight 0; at least one must be positive",
            ));
        }
        Ok(())
    }

    /// The set without the endpoints that are invalid on their own or
    /// repeat an earlier one, and why each was left out: what a discovery
    /// source reported is taken as far as it holds, so one bad endpoint
    /// does not keep the healthy rest out.
    pub fn without_invalid(self) -> (EndpointsSpec, Vec<String>) {
        let mut seen = BTreeSet::new();
        let mut reasons = Vec::new();
        let mut kept = Vec::new();
        for (i, ep) in self.endpoints.into_iter().enumerate() {
            let field = |f: &str| format!("spec.endpoints[{i}].{f}");
            match ep.check(&field) {
                Ok(ip) if seen.insert((ip, ep.port)) => kept.push(ep),
                Ok(_) => reasons.push(format!(
                    "{}: {}:{} is listed twice",
                    field("address"),
                    ep.address,
                    ep.port
                )),
                Err(e) => reasons.push(e.to_string()),
            }
        }
        (EndpointsSpec { endpoints: kept }, reasons)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(address: &str, port: u16, weight: u32) -> Endpoint {
        Endpoint {
            address: address.into(),
            port,
            weight,
            zone: None,
            health: Health::Healthy,
        }
    }

    #[test]
    fn rejects_bad_endpoints() {
        let cases = [
            (vec![ep("10.0.0.1", 80, 0), ep("10.0.0.2", 80, 0)], "weight"),
            (vec![ep("not-an-ip", 80, 1)], "spec.endpoints[0].address"),
            (vec![ep("10.0.0.1", 0, 1)], "spec.endpoints[0].port"),
            (
                vec![ep("10.0.0.1", 80, 1), ep("10.0.0.1", 80, 2)],
                "spec.endpoints[1].address",
            ),
        ];
        for (endpoints, field) in cases {
            let err = EndpointsSpec { endpoints }.validate().expect_err(field);
            assert!(err.to_string().contains(field), "{err} should name {field}");
        }
    }

    #[test]
    fn without_invalid_keeps_the_valid_rest() {
        let mut zoned = ep("10.0.0.2", 80, 1);
        zoned.zone = Some("Rack_A".into());
        let spec = EndpointsSpec {
            endpoints: vec![
                ep("10.0.0.1", 80, 1),
                zoned,
                ep("web-0.shop.svc", 80, 1),
                ep("10.0.0.1", 80, 2),
                ep("10.0.0.3", 80, 1),
            ],
        };
        let (kept, reasons) = spec.without_invalid();
        let addresses: Vec<&str> = kept.endpoints.iter().map(|e| e.address.as_str()).collect();
        assert_eq!(addresses, ["10.0.0.1", "10.0.0.3"]);
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("spec.endpoints[1].zone"), "{reasons:?}");
        assert!(kept.validate().is_ok());
    }

    #[test]
    fn accepts_empty_and_mixed_weights() {
        assert!(EndpointsSpec { endpoints: vec![] }.validate().is_ok());
        let spec = EndpointsSpec {
            endpoints: vec![ep("10.0.0.1", 80, 0), ep("::1", 80, 3)],
        };
        assert!(spec.validate().is_ok());
    }
}
