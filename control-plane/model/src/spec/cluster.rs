//! `Cluster`: a member Kubernetes cluster or another endpoint source, placed in a locality.

use crate::{names::check_label, ModelError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

impl ClusterSpec {
    pub fn validate(&self) -> Result<(), ModelError> {
        check_label("spec.region", &self.region)?;
        if let Some(zone) = &self.zone {
            check_label("spec.zone", zone)?;
        }
        Ok(())
    }
}
