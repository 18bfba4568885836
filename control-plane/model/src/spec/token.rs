//! `BootstrapToken`: lets a proxy, agent or operator without a certificate
//! get one. Only the SHA-256 of its secret is stored; each use is a
//! replicated write, so bounded use holds across the whole control plane.

use crate::{names::check_label, ModelError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    Proxy,
    Agent,
    Admin,
    Viewer,
}

impl std::str::FromStr for TokenRole {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "proxy" => Ok(TokenRole::Proxy),
            "agent" => Ok(TokenRole::Agent),
            "admin" => Ok(TokenRole::Admin),
            "viewer" => Ok(TokenRole::Viewer),
            _ => Err(format!(
                "unknown role '{text}': use proxy, agent, admin or viewer"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapTokenSpec {
    pub role: TokenRole,
    /// The cluster a proxy or agent token is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The only name the token may put in a certificate (a proxy's node id,
    /// an operator's name); any name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub max_uses: u32,
    #[serde(default)]
    pub used: u32,
    /// Unix seconds after which the token is refused.
    pub expires_at: u64,
    #[serde(default)]
    pub revoked: bool,
    /// Hex SHA-256 of the token's secret.
    pub secret_sha256: String,
}

impl BootstrapTokenSpec {
    pub fn validate(&self) -> Result<(), ModelError> {
        match (&self.role, &self.cluster) {
            (TokenRole::Proxy | TokenRole::Agent, None) => {
                return Err(ModelError::invalid(
                    "spec.cluster",
                    "proxy and agent tokens name their cluster",
                ))
            }
            (_, Some(cluster)) => check_label("spec.cluster", cluster)?,
            _ => {}
        }
        if let Some(name) = &self.name {
            check_label("spec.name", name)?;
        }
        if self.max_uses == 0 {
            return Err(ModelError::invalid("spec.maxUses", "must be at least 1"));
        }
        if self.used > self.max_uses {
            return Err(ModelError::invalid("spec.used", "exceeds spec.maxUses"));
        }
        let is_hex = self.secret_sha256.len() == 64
            && self
                .secret_sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !is_hex {
            return Err(ModelError::invalid(
                "spec.secretSha256",
                "must be 64 lowercase hex digits",
            ));
        }
        Ok(())
    }

    /// Why the token cannot be used at `now` (unix seconds), if it cannot.
    pub fn refusal(&self, now: u64) -> Option<&'static str> {
        if self.revoked {
            Some("the token has been revoked")
        } else if now >= self.expires_at {
            Some("the token has expired")
        } else if self.used >= self.max_uses {
            Some("the token has been used up")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> BootstrapTokenSpec {
        BootstrapTokenSpec {
            role: TokenRole::Proxy,
            cluster: Some("east".into()),
            name: None,
            max_uses: 1,
            used: 0,
            expires_at: 100,
            revoked: false,
            secret_sha256: "a".repeat(64),
        }
    }

    #[test]
    fn usable_until_used_up_expired_or_revoked() {
        assert_eq!(token().refusal(99), None);
        assert!(token().refusal(100).is_some());
        let used = BootstrapTokenSpec { used: 1, ..token() };
        assert_eq!(used.refusal(0), Some("the token has been used up"));
        let revoked = BootstrapTokenSpec {
            revoked: true,
            ..token()
        };
        assert_eq!(revoked.refusal(0), Some("the token has been revoked"));
    }

    #[test]
    fn invalid_tokens_are_refused() {
        assert!(token().validate().is_ok());
        let no_cluster = BootstrapTokenSpec {
            cluster: None,
            ..token()
        };
        assert!(no_cluster.validate().is_err());
        let no_uses = BootstrapTokenSpec {
            max_uses: 0,
            ..token()
        };
        assert!(no_uses.validate().is_err());
        let bad_hash = BootstrapTokenSpec {
            secret_sha256: "xyz".into(),
            ..token()
        };
        assert!(bad_hash.validate().is_err());
    }
}
