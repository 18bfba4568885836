//! SPIFFE IDs of the mesh's workloads: who a certificate says it is. Pure.

use std::fmt;

/// What a certificate identifies, within one trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A control-plane node.
    Node(u64),
    /// A proxy in a member cluster.
    Proxy { cluster: String, id: String },
    /// A cluster's federation agent.
    Agent { cluster: String },
    /// An operator or tool using the admin API: reads and writes.
    Admin { name: String },
    /// An operator or tool that may only read through the admin API.
    Viewer { name: String },
}

/// A trust domain and an identity in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub identity: Identity,
}

fn check_segment(what: &str, value: &str) -> Result<(), String> {
    let valid = !value.is_empty()
        && value.len() <= 253
        && value.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_')
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{what} '{value}' may hold only lowercase letters, digits, '-', '.' and '_'"
        ))
    }
}

impl SpiffeId {
    pub fn new(trust_domain: &str, identity: Identity) -> Result<Self, String> {
        check_segment("trust domain", trust_domain)?;
        match &identity {
            Identity::Node(id) if *id == 0 => return Err("node ids are positive".into()),
            Identity::Node(_) => {}
            Identity::Proxy { cluster, id } => {
                check_segment("cluster", cluster)?;
                check_segment("proxy id", id)?;
            }
            Identity::Agent { cluster } => check_segment("cluster", cluster)?,
            Identity::Admin { name } => check_segment("admin name", name)?,
            Identity::Viewer { name } => check_segment("viewer name", name)?,
        }
        Ok(SpiffeId {
            trust_domain: trust_domain.to_string(),
            identity,
        })
    }

    /// Parses `spiffe://TRUST_DOMAIN/...` as Meridian writes them.
    pub fn parse(uri: &str) -> Result<Self, String> {
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| format!("'{uri}' is not a spiffe:// URI"))?;
        let (trust_domain, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("'{uri}' has no path"))?;
        let segments: Vec<&str> = path.split('/').collect();
        let identity = match segments.as_slice() {
            ["node", id] => {
                Identity::Node(id.parse().map_err(|_| format!("'{uri}': bad node id"))?)
            }
            ["cluster", cluster, "proxy", id] => Identity::Proxy {
                cluster: cluster.to_string(),
                id: id.to_string(),
            },
            ["cluster", cluster, "agent"] => Identity::Agent {
                cluster: cluster.to_string(),
            },
            ["admin", name] => Identity::Admin {
                name: name.to_string(),
            },
            ["viewer", name] => Identity::Viewer {
                name: name.to_string(),
            },
            _ => return Err(format!("'{uri}' is not a Meridian identity")),
        };
        SpiffeId::new(trust_domain, identity)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/", self.trust_domain)?;
        match &self.identity {
            Identity::Node(id) => write!(f, "node/{id}"),
            Identity::Proxy { cluster, id } => write!(f, "cluster/{cluster}/proxy/{id}"),
            Identity::Agent { cluster } => write!(f, "cluster/{cluster}/agent"),
            Identity::Admin { name } => write!(f, "admin/{name}"),
            Identity::Viewer { name } => write!(f, "viewer/{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        let ids = [
            Identity::Node(3),
            Identity::Proxy {
                cluster: "us-east-1a".into(),
                id: "web-7".into(),
            },
            Identity::Agent {
                cluster: "us-east-1a".into(),
            },
            Identity::Admin {
                name: "alice".into(),
            },
            Identity::Viewer { name: "bob".into() },
        ];
        for identity in ids {
            let id = SpiffeId::new("mesh.example", identity).expect("valid");
            assert_eq!(SpiffeId::parse(&id.to_string()), Ok(id));
        }
        assert_eq!(
            SpiffeId::new(
                "mesh.example",
                Identity::Agent {
                    cluster: "east".into()
                }
            )
            .expect("valid")
            .to_string(),
            "spiffe://mesh.example/cluster/east/agent"
        );
        for bad in [
            "http://x/node/1",
            "spiffe://x",
            "spiffe://x/node/0",
            "spiffe://x/cluster/A/agent",
            "spiffe://x/what/1",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
    }
}
