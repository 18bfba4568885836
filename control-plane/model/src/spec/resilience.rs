//! A service's retries and passive health (outlier detection), with the
//! defaults every service gets when it says nothing: failover must need no
//! tuning, so a host that stops answering leaves rotation and an idempotent
//! request that hit it is tried again elsewhere.

use super::Protocol;
use crate::{Duration, ModelError};
use serde::{Deserialize, Serialize};

/// Retries beyond this are a configuration mistake, not resilience.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first try; 0 turns retries off (connect failures included).
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    /// What is retried; connect failures and resets when empty.
    #[serde(default)]
    pub on: Vec<RetryOn>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetryOn {
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    #[serde(rename = "reset")]
    Reset,
    #[serde(rename = "5xx")]
    Server5xx,
    #[serde(rename = "gateway-error")]
    GatewayError,
    #[serde(rename = "retriable-4xx")]
    Retriable4xx,
}

impl RetryPolicy {
    /// What a service without `retries` gets: one retry of an idempotent
    /// request on a connect failure or a reset, to another host. gRPC
    /// services get two, as Istio gives them: proxyless gRPC clients honour
    /// neither the host predicate nor the priority plugin, so when a whole
    /// priority dies a retry can land on a second dying host of it.
    pub fn default_for(protocol: Protocol) -> Self {
        RetryPolicy {
            attempts: if protocol == Protocol::Grpc { 2 } else { 1 },
            per_try_timeout: None,
            on: vec![RetryOn::ConnectFailure, RetryOn::Reset],
        }
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        if self.attempts > MAX_RETRY_ATTEMPTS {
            return Err(ModelError::invalid(
                "spec.retries.attempts",
                format!(
                    "{} exceeds the maximum of {MAX_RETRY_ATTEMPTS}",
                    self.attempts
                ),
            ));
        }
        Ok(())
    }
}

/// Passive health, after Envoy's outlier detection. Every service has it
/// unless `enabled: false`; each field left out takes its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    #[serde(default = "enabled", skip_serializing_if = "is_enabled")]
    pub enabled: bool,
    /// Eject after this many consecutive 5xx of any kind (and connect failures).
    #[serde(
        rename = "consecutive5xx",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub consecutive_5xx: Option<u32>,
    /// Eject after this many consecutive gateway errors (502, 503, 504),
    /// connect failures or resets; the default detector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
}

fn enabled() -> bool {
    true
}

fn is_enabled(enabled: &bool) -> bool {
    *enabled
}

/// Outlier detection as compiled: every value decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierSettings {
    /// What counts as a failure, and how many in a row eject.
    pub detector: Detector,
    pub interval: std::time::Duration,
    pub base_ejection_time: std::time::Duration,
    /// Of all the service's hosts; a proxy never ejects the last one it has.
    pub max_ejection_percent: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detector {
    Consecutive5xx(u32),
    ConsecutiveGatewayErrors(u32),
}

pub const DEFAULT_CONSECUTIVE_GATEWAY_ERRORS: u32 = 3;
pub const DEFAULT_OUTLIER_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
pub const DEFAULT_BASE_EJECTION_TIME: std::time::Duration = std::time::Duration::from_secs(5);
/// All of them: a dead tier must empty so its traffic spills to the next.
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 100;

impl OutlierDetection {
    /// The settings in force, `None` when turned off; `None` as the spec
    /// (no `outlierDetection` at all) gives the defaults.
    pub fn settings(spec: Option<&OutlierDetection>) -> Option<OutlierSettings> {
        let od = spec.cloned().unwrap_or(OutlierDetection {
            enabled: true,
            consecutive_5xx: None,
            consecutive_gateway_errors: None,
            interval: None,
            base_ejection_time: None,
            max_ejection_percent: None,
        });
        if !od.enabled {
            return None;
        }
        let detector = match (od.consecutive_5xx, od.consecutive_gateway_errors) {
            (Some(n), _) => Detector::Consecutive5xx(n),
            (None, n) => {
                Detector::ConsecutiveGatewayErrors(n.unwrap_or(DEFAULT_CONSECUTIVE_GATEWAY_ERRORS))
            }
        };
        Some(OutlierSettings {
            detector,
            interval: od
                .interval
                .map(|d| d.as_std())
                .unwrap_or(DEFAULT_OUTLIER_INTERVAL),
            base_ejection_time: od
                .base_ejection_time
                .map(|d| d.as_std())
                .unwrap_or(DEFAULT_BASE_EJECTION_TIME),
            max_ejection_percent: od
                .max_ejection_percent
                .unwrap_or(DEFAULT_MAX_EJECTION_PERCENT),
        })
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        if self.consecutive_5xx.is_some() && self.consecutive_gateway_errors.is_some() {
            return Err(ModelError::invalid(
                "spec.outlierDetection",
                "give consecutive5xx or consecutiveGatewayErrors, not both",
            ));
        }
        if self.consecutive_5xx == Some(0) || self.consecutive_gateway_errors == Some(0) {
            return Err(ModelError::invalid(
                "spec.outlierDetection",
                "a consecutive failure count must be at least 1",
            ));
        }
        if let Some(percent) = self.max_ejection_percent.filter(|p| *p > 100) {
            return Err(ModelError::invalid(
                "spec.outlierDetection.maxEjectionPercent",
                format!("{percent} is more than 100"),
            ));
        }
        if self.interval.is_some_and(|i| i.as_std().is_zero()) {
            return Err(ModelError::invalid(
                "spec.outlierDetection.interval",
                "must be positive",
            ));
        }
        if self
            .base_ejection_time
            .is_some_and(|t| t.as_std().is_zero())
        {
            return Err(ModelError::invalid(
                "spec.outlierDetection.baseEjectionTime",
                "must be positive",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> OutlierDetection {
        serde_yaml::from_str(yaml).expect("parses")
    }

    #[test]
    fn no_spec_means_the_defaults() {
        let settings = OutlierDetection::settings(None).expect("on by default");
        assert_eq!(
            settings.detector,
            Detector::ConsecutiveGatewayErrors(DEFAULT_CONSECUTIVE_GATEWAY_ERRORS)
        );
        assert_eq!(settings.max_ejection_percent, 100);
        assert_eq!(settings.base_ejection_time, DEFAULT_BASE_EJECTION_TIME);
    }

    #[test]
    fn fields_given_override_and_enabled_false_turns_it_off() {
        let od = parse("{consecutive5xx: 5, baseEjectionTime: 30s}");
        let settings = OutlierDetection::settings(Some(&od)).expect("on");
        assert_eq!(settings.detector, Detector::Consecutive5xx(5));
        assert_eq!(settings.base_ejection_time.as_secs(), 30);
        assert_eq!(settings.max_ejection_percent, 100);
        assert_eq!(
            OutlierDetection::settings(Some(&parse("{enabled: false}"))),
            None
        );
        // Written back without the default `enabled`, so `get -o yaml` round-trips.
        assert!(!serde_yaml::to_string(&od)
            .expect("yaml")
            .contains("enabled"));
    }

    #[test]
    fn refuses_what_cannot_work() {
        for bad in [
            "{consecutive5xx: 0}",
            "{consecutive5xx: 3, consecutiveGatewayErrors: 3}",
            "{maxEjectionPercent: 101}",
            "{interval: 0s}",
            "{baseEjectionTime: 0s}",
        ] {
            assert!(parse(bad).validate().is_err(), "{bad}");
        }
        assert!(parse("{}").validate().is_ok());
    }
}
