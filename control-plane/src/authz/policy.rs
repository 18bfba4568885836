//! Who may call what: a pure function of the gRPC method and the identity
//! the caller's certificate proved. Checks that depend on a request's
//! contents (an agent's cluster, a proxy's node) are made by the services,
//! with [`Caller`] in hand.

use meridian_identity::spiffe::{Identity, SpiffeId};
use meridian_identity::tls::PeerIdentity;

/// Who made a request that was let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// `--insecure`: nobody is authenticated and everything is allowed.
    Anyone,
    /// A peer without a valid certificate (and why), on the one method open
    /// to it (certificate issuance, which checks a bootstrap token instead).
    Unauthenticated(String),
    Verified(SpiffeId),
}

/// Why a request was refused; nothing was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Unauthenticated(String),
    PermissionDenied(String),
}

impl Refusal {
    pub fn status(&self) -> tonic::Status {
        match self {
            Refusal::Unauthenticated(reason) => tonic::Status::unauthenticated(reason.clone()),
            Refusal::PermissionDenied(reason) => tonic::Status::permission_denied(reason.clone()),
        }
    }
}

/// What a method requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Certificate issuance: a bootstrap token or the caller's own certificate.
    Bootstrap,
    /// Any valid mesh identity (health checks).
    AnyIdentity,
    /// Admin reads: admins, viewers and control-plane nodes.
    Read,
    /// Admin writes: admins only.
    Write,
    /// Admin reads of secrets: admins only.
    Secrets,
    /// Raft and leader forwarding: member nodes only.
    Raft,
    /// Endpoint streams: agents (of their own cluster) and nodes.
    Federation,
    /// xDS: proxies (of their own cluster and node).
    Xds,
    Unknown,
}

const ADMIN_READS: [&str; 8] = [
    "Get",
    "List",
    "Watch",
    "ListMembers",
    "Status",
    "ListProxies",
    "Propagation",
    "Explain",
];

/// Admin methods that read secrets: a snapshot holds every object, bootstrap
/// token hashes included, so viewers may not take one.
const ADMIN_SECRET_READS: [&str; 1] = ["Snapshot"];

/// Every service this server answers, and what it requires; admin methods
/// other than [`ADMIN_READS`] and [`ADMIN_SECRET_READS`] are writes.
const SERVICES: [(&str, Access); 8] = [
    ("meridian.v1.Admin", Access::Write),
    ("meridian.v1.Certificates", Access::Bootstrap),
    ("meridian.v1.Raft", Access::Raft),
    ("meridian.v1.Federation", Access::Federation),
    (
        "envoy.service.discovery.v3.AggregatedDiscoveryService",
        Access::Xds,
    ),
    ("grpc.health.v1.Health", Access::AnyIdentity),
    ("grpc.reflection.v1.ServerReflection", Access::Read),
    ("grpc.reflection.v1alpha.ServerReflection", Access::Read),
];

/// The entry of `path`'s service, if this server answers it.
fn entry(path: &str) -> Option<&'static (&'static str, Access)> {
    let service = path.trim_start_matches('/').split('/').next()?;
    SERVICES.iter().find(|(known, _)| *known == service)
}

/// The service of a gRPC path, if this server answers it (callers choose
/// paths, so only these become metric labels).
pub fn known_service(path: &str) -> Option<&'static str> {
    entry(path).map(|(service, _)| *service)
}

fn access(path: &str) -> Access {
    let method = path.trim_start_matches('/').split_once('/').map(|(_, m)| m);
    match (entry(path), method) {
        (Some(("meridian.v1.Admin", _)), Some(method)) if ADMIN_READS.contains(&method) => {
            Access::Read
        }
        (Some(("meridian.v1.Admin", _)), Some(method)) if ADMIN_SECRET_READS.contains(&method) => {
            Access::Secrets
        }
        (Some((_, access)), Some(_)) => *access,
        _ => Access::Unknown,
    }
}

/// A node identity counts only while the node is a member: the certificate
/// of a removed node stays valid until it expires, but no longer speaks for
/// a node. Refused unless `is_member(n)` for a node `n` (other callers pass).
pub fn node_is_member(
    id: &SpiffeId,
    path: &str,
    is_member: impl Fn(u64) -> bool,
) -> Result<(), Refusal> {
    match id.identity {
        Identity::Node(n) if !is_member(n) => Err(Refusal::PermissionDenied(format!(
            "{id} may not call {path}: node {n} is not a member of this control plane \
             (removed, or not added yet), and only member nodes are admitted as nodes"
        ))),
        _ => Ok(()),
    }
}

/// Lets a call through or says why not. `is_member` tells whether a node id
/// belongs to the Raft cluster.
pub fn authorize(
    path: &str,
    peer: &PeerIdentity,
    is_member: impl Fn(u64) -> bool,
) -> Result<Caller, Refusal> {
    let access = access(path);
    let id = match peer {
        PeerIdentity::Plaintext => return Ok(Caller::Anyone),
        PeerIdentity::Unverified(reason) if access == Access::Bootstrap => {
            return Ok(Caller::Unauthenticated(reason.clone()))
        }
        PeerIdentity::Unverified(reason) => {
            return Err(Refusal::Unauthenticated(format!(
                "{path} needs a valid client certificate: {reason}"
            )))
        }
        PeerIdentity::Verified(id) => id,
    };
    // Issuance decides for itself (a token does not depend on the
    // certificate; a node's renewal is refused there).
    if access != Access::Bootstrap {
        node_is_member(id, path, is_member)?;
    }
    let allowed = matches!(
        (access, &id.identity),
        (Access::Bootstrap | Access::AnyIdentity, _)
            | (
                Access::Read,
                Identity::Admin { .. } | Identity::Viewer { .. } | Identity::Node(_)
            )
            | (Access::Write | Access::Secrets, Identity::Admin { .. })
            | (Access::Raft, Identity::Node(_))
            | (
                Access::Federation,
                Identity::Agent { .. } | Identity::Node(_)
            )
            | (Access::Xds, Identity::Proxy { .. })
    );
    if allowed {
        Ok(Caller::Verified(id.clone()))
    } else {
        let why = match access {
            Access::Read => "reads need an admin, viewer or node identity",
            Access::Write => "writes need an admin identity",
            Access::Secrets => {
                "a snapshot holds secrets (bootstrap token hashes) and needs an admin identity"
            }
            Access::Raft => "Raft RPCs are accepted only from member nodes",
            Access::Federation => "endpoint streams need an agent identity",
            Access::Xds => "xDS needs a proxy identity",
            Access::Unknown => "no identity may call this method",
            Access::Bootstrap | Access::AnyIdentity => "refused",
        };
        Err(Refusal::PermissionDenied(format!(
            "{id} may not call {path}: {why}"
        )))
    }
}

/// An agent may stream only its own cluster's endpoints; nodes (in-process
/// sources) any cluster's.
pub fn may_stream_endpoints(caller: &Caller, cluster: &str) -> Result<(), Refusal> {
    match caller {
        Caller::Anyone => Ok(()),
        Caller::Verified(id) => match &id.identity {
            Identity::Node(_) => Ok(()),
            Identity::Agent { cluster: own } if own == cluster => Ok(()),
            _ => Err(Refusal::PermissionDenied(format!(
                "{id} may not write the endpoints of cluster '{cluster}'"
            ))),
        },
        Caller::Unauthenticated(reason) => Err(Refusal::Unauthenticated(format!(
            "endpoint streams need a valid client certificate: {reason}"
        ))),
    }
}

/// A proxy subscribes to xDS only as the node and cluster its certificate names.
pub fn may_subscribe(caller: &Caller, cluster: &str, node_id: &str) -> Result<(), Refusal> {
    match caller {
        Caller::Anyone => Ok(()),
        Caller::Verified(id) => match &id.identity {
            Identity::Proxy {
                cluster: own,
                id: own_id,
            } if own == cluster && own_id == node_id => Ok(()),
            _ => Err(Refusal::PermissionDenied(format!(
                "{id} may not subscribe as node '{node_id}' of cluster '{cluster}'"
            ))),
        },
        Caller::Unauthenticated(reason) => Err(Refusal::Unauthenticated(format!(
            "xDS needs a valid client certificate: {reason}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(identity: Identity) -> PeerIdentity {
        PeerIdentity::Verified(SpiffeId::new("mesh.example", identity).expect("id"))
    }

    fn admin() -> PeerIdentity {
        verified(Identity::Admin {
            name: "alice".into(),
        })
    }
    fn viewer() -> PeerIdentity {
        verified(Identity::Viewer { name: "bob".into() })
    }
    fn proxy() -> PeerIdentity {
        verified(Identity::Proxy {
            cluster: "east".into(),
            id: "web-1".into(),
        })
    }
    fn agent() -> PeerIdentity {
        verified(Identity::Agent {
            cluster: "east".into(),
        })
    }
    fn denied(path: &str, peer: &PeerIdentity) -> bool {
        matches!(
            authorize(path, peer, |n| n <= 3),
            Err(Refusal::PermissionDenied(_))
        )
    }

    #[test]
    fn admins_write_viewers_only_read() {
        assert!(authorize("/meridian.v1.Admin/Apply", &admin(), |_| true).is_ok());
        assert!(denied("/meridian.v1.Admin/Apply", &viewer()));
        assert!(authorize("/meridian.v1.Admin/List", &viewer(), |_| true).is_ok());
        for read in ["ListProxies", "Propagation", "Explain"] {
            let path = format!("/meridian.v1.Admin/{read}");
            assert!(authorize(&path, &viewer(), |_| true).is_ok(), "{path}");
            assert!(denied(&path, &proxy()), "{path}");
        }
        assert!(denied("/meridian.v1.Admin/RemoveMember", &viewer()));
        assert!(
            denied("/meridian.v1.Admin/SomethingNew", &viewer()),
            "unknown admin methods are writes"
        );
    }

    #[test]
    fn only_admins_take_snapshots() {
        let snapshot = "/meridian.v1.Admin/Snapshot";
        assert!(authorize(snapshot, &admin(), |_| true).is_ok());
        assert!(denied(snapshot, &viewer()));
        assert!(denied(snapshot, &verified(Identity::Node(1))));
        assert!(denied(snapshot, &proxy()));
    }

    #[test]
    fn proxies_only_read_xds_and_agents_only_stream_endpoints() {
        let xds = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
        assert!(authorize(xds, &proxy(), |_| true).is_ok());
        assert!(denied(xds, &agent()));
        assert!(denied(xds, &admin()));
        assert!(denied("/meridian.v1.Admin/List", &proxy()));
        assert!(denied("/meridian.v1.Admin/Apply", &proxy()));
        assert!(denied("/meridian.v1.Raft/AppendEntries", &proxy()));
        assert!(authorize("/meridian.v1.Federation/Sync", &agent(), |_| true).is_ok());
        assert!(denied("/meridian.v1.Federation/Sync", &proxy()));
        assert!(denied("/meridian.v1.Admin/Put", &agent()));
    }

    #[test]
    fn agents_and_proxies_are_held_to_their_own_cluster() {
        let caller = |peer: PeerIdentity| match peer {
            PeerIdentity::Verified(id) => Caller::Verified(id),
            _ => Caller::Anyone,
        };
        assert!(may_stream_endpoints(&caller(agent()), "east").is_ok());
        assert!(matches!(
            may_stream_endpoints(&caller(agent()), "west"),
            Err(Refusal::PermissionDenied(_))
        ));
        assert!(may_subscribe(&caller(proxy()), "east", "web-1").is_ok());
        assert!(may_subscribe(&caller(proxy()), "west", "web-1").is_err());
        assert!(may_subscribe(&caller(proxy()), "east", "web-2").is_err());
        assert!(may_subscribe(&Caller::Anyone, "any", "any").is_ok());
    }

    #[test]
    fn raft_is_for_member_nodes() {
        let raft = "/meridian.v1.Raft/AppendEntries";
        assert!(authorize(raft, &verified(Identity::Node(2)), |n| n <= 3).is_ok());
        assert!(denied(raft, &verified(Identity::Node(9))));
        assert!(denied(raft, &admin()));
    }

    #[test]
    fn a_node_that_is_not_a_member_is_no_node() {
        let removed = verified(Identity::Node(9));
        let member = verified(Identity::Node(2));
        for path in [
            "/meridian.v1.Federation/Sync",
            "/meridian.v1.Admin/ListProxies",
            "/meridian.v1.Admin/List",
            "/meridian.v1.Raft/Propose",
            "/grpc.health.v1.Health/Check",
        ] {
            assert!(authorize(path, &member, |n| n <= 3).is_ok(), "{path}");
            let refused = authorize(path, &removed, |n| n <= 3);
            assert!(
                matches!(&refused, Err(Refusal::PermissionDenied(r)) if r.contains("not a member")),
                "{path}: {refused:?}"
            );
        }
        // Issuance: the service refuses a node's renewal; a token is not the
        // certificate's business.
        assert!(authorize("/meridian.v1.Certificates/Issue", &removed, |n| n <= 3).is_ok());
        // Other identities are not nodes.
        assert!(authorize("/meridian.v1.Federation/Sync", &agent(), |_| false).is_ok());
    }

    #[test]
    fn without_a_valid_certificate_only_issuance_is_open() {
        let stranger = PeerIdentity::Unverified("the certificate has expired".into());
        let refused = authorize("/meridian.v1.Admin/List", &stranger, |_| true);
        assert!(
            matches!(&refused, Err(Refusal::Unauthenticated(r)) if r.contains("expired")),
            "{refused:?}"
        );
        assert_eq!(
            authorize("/meridian.v1.Certificates/Issue", &stranger, |_| true),
            Ok(Caller::Unauthenticated(
                "the certificate has expired".into()
            ))
        );
        assert_eq!(
            authorize("/meridian.v1.Admin/Apply", &PeerIdentity::Plaintext, |_| {
                false
            }),
            Ok(Caller::Anyone)
        );
        assert!(denied("/unknown.Service/Call", &admin()));
    }
}
