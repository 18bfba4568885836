//! The kinds of resource Meridian replicates.

use crate::ModelError;
use serde::{Deserialize, Serialize};
use std::{fmt, str::FromStr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Cluster,
    Service,
    Endpoints,
    TrafficSplit,
    FailoverPolicy,
    BootstrapToken,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Cluster,
        Kind::Service,
        Kind::Endpoints,
        Kind::TrafficSplit,
        Kind::FailoverPolicy,
        Kind::BootstrapToken,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Cluster => "Cluster",
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::TrafficSplit => "TrafficSplit",
            Kind::FailoverPolicy => "FailoverPolicy",
            Kind::BootstrapToken => "BootstrapToken",
        }
    }

    /// Clusters and tokens are global; every other kind lives in a namespace.
    pub fn is_namespaced(&self) -> bool {
        !matches!(self, Kind::Cluster | Kind::BootstrapToken)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Accepts the canonical name and the forms a CLI user types:
/// `Service`, `service`, `services`, `trafficsplits`, `traffic-split`.
impl FromStr for Kind {
    type Err = ModelError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let folded: String = text
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        let kind = match folded.as_str() {
            "cluster" | "clusters" => Kind::Cluster,
            "service" | "services" | "svc" => Kind::Service,
            "endpoints" | "endpoint" | "ep" => Kind::Endpoints,
            "trafficsplit" | "trafficsplits" => Kind::TrafficSplit,
            "failoverpolicy" | "failoverpolicies" => Kind::FailoverPolicy,
            "bootstraptoken" | "bootstraptokens" | "token" | "tokens" => Kind::BootstrapToken,
            _ => return Err(ModelError::UnknownKind(text.to_string())),
        };
        Ok(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cli_spellings() {
        assert_eq!("services".parse::<Kind>(), Ok(Kind::Service));
        assert_eq!("traffic-splits".parse::<Kind>(), Ok(Kind::TrafficSplit));
        assert_eq!("FailoverPolicy".parse::<Kind>(), Ok(Kind::FailoverPolicy));
        assert!("Gateway".parse::<Kind>().is_err());
        for kind in Kind::ALL {
            assert_eq!(kind.as_str().parse::<Kind>(), Ok(kind));
        }
    }
}
