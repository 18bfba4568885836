//! `meridian server` configuration: flags (each also a `MERIDIAN_*`
//! variable), parsed into a typed config and validated before anything starts.

use crate::raft::NodeId;
use meridian_federation::{sources::kubernetes::KubernetesOptions, SourceSpec};
use meridian_identity::tls::TlsFiles;
use std::{
    collections::BTreeMap,
    net::{SocketAddr, ToSocketAddrs},
    path::PathBuf,
};

#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub otlp: meridian_telemetry::OtlpArgs,
    /// This node's Raft id (a positive integer, unique in the cluster).
    #[arg(long, env = "MERIDIAN_NODE_ID")]
    pub node_id: NodeId,
    /// Where the node keeps its Raft log and state (RocksDB).
    #[arg(long, env = "MERIDIAN_DATA_DIR")]
    pub data_dir: PathBuf,
    /// gRPC address for the admin API and Raft peers.
    #[arg(long, env = "MERIDIAN_GRPC_ADDR", default_value = "127.0.0.1:7400")]
    pub grpc_addr: String,
    /// HTTP address for /healthz, /readyz and /metrics.
    #[arg(long, env = "MERIDIAN_HTTP_ADDR", default_value = "127.0.0.1:7401")]
    pub http_addr: String,
    /// The members of a new cluster, `1=HOST:PORT,2=HOST:PORT,...`, the same on
    /// every founding node. Omit it on a node that will join as a learner.
    #[arg(long, env = "MERIDIAN_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// How this node reaches a peer when that differs from the peer's member
    /// address (NAT, a tunnel, a local TCP proxy): `ID=HOST:PORT`, repeated
    /// or comma-separated. Only this node's outgoing connections use it; the
    /// membership and everyone else keep the member address.
    #[arg(long, env = "MERIDIAN_PEER_ADDRESS", value_delimiter = ',')]
    pub peer_address: Vec<String>,
    /// Take a snapshot (and purge the log behind it) after this many entries.
    #[arg(long, env = "MERIDIAN_SNAPSHOT_THRESHOLD", default_value_t = 10_000)]
    pub snapshot_threshold: u64,
    /// How long a cluster's agent may be gone before its endpoints are marked stale.
    #[arg(long, env = "MERIDIAN_AGENT_GRACE_PERIOD", default_value = "30s")]
    pub agent_grace_period: meridian_model::Duration,
    /// Run a discovery source in-process (`kubernetes`, `file:PATH`, `http-sd:URL`)
    /// for the cluster named by --source-cluster, instead of a separate agent.
    #[arg(long, env = "MERIDIAN_SOURCE", requires = "source_cluster")]
    pub source: Option<String>,
    #[arg(long, env = "MERIDIAN_SOURCE_CLUSTER", requires = "source")]
    pub source_cluster: Option<String>,
    /// For an in-process Kubernetes source.
    #[arg(long, env = "MERIDIAN_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    #[arg(long, env = "MERIDIAN_KUBE_CONTEXT")]
    pub kube_context: Option<String>,
    /// The mesh CA (`ca.pem`, `ca.key`, as made by `meridian certs create-ca`):
    /// with it this node issues certificates to proxies, agents and operators.
    #[arg(long, env = "MERIDIAN_CA_DIR")]
    pub ca_dir: Option<PathBuf>,
    /// How long the certificates this node issues are valid.
    #[arg(long, env = "MERIDIAN_CERT_LIFETIME", default_value = "24h")]
    pub cert_lifetime: meridian_model::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

/// A validated server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The founding members, if this node founds the cluster.
    pub initial_cluster: Option<BTreeMap<NodeId, String>>,
    /// Where this node dials a peer instead of its member address.
    pub peer_addresses: BTreeMap<NodeId, String>,
    pub snapshot_threshold: u64,
    pub agent_grace: std::time::Duration,
    /// An in-process discovery source and the cluster it reports.
    pub source: Option<(SourceSpec, String)>,
    /// This node's certificate, key and trust bundle; None with `--insecure`.
    pub tls: Option<TlsFiles>,
    pub ca_dir: Option<PathBuf>,
    pub cert_lifetime: std::time::Duration,
    pub otlp: meridian_telemetry::OtlpArgs,
}

impl ServerArgs {
    pub fn validate(&self, tls: Option<TlsFiles>) -> Result<ServerConfig, ConfigError> {
        let insecure = tls.is_none();
        if self.node_id == 0 {
            return Err(invalid("--node-id must be a positive integer"));
        }
        if self.snapshot_threshold == 0 {
            return Err(invalid("--snapshot-threshold must be at least 1"));
        }
        let grpc_addr = resolve("--grpc-addr", &self.grpc_addr)?;
        let http_addr = resolve("--http-addr", &self.http_addr)?;
        let initial_cluster = self
            .initial_cluster
            .as_deref()
            .map(parse_initial_cluster)
            .transpose()?;
        let peer_addresses = if self.peer_address.is_empty() {
            BTreeMap::new()
        } else {
            parse_members("--peer-address", &self.peer_address.join(","))?
        };
        if peer_addresses.contains_key(&self.node_id) {
            return Err(invalid(format!(
                "--peer-address names this node ({}); it only says how to reach the others",
                self.node_id
            )));
        }
        if let Some(members) = &initial_cluster {
            if !members.contains_key(&self.node_id) {
                return Err(invalid(format!(
                    "--initial-cluster does not name node {}; omit it on a node that joins an existing cluster",
                    self.node_id
                )));
            }
        }
        if insecure {
            require_loopback("--grpc-addr", &grpc_addr)?;
            require_loopback("--http-addr", &http_addr)?;
            for addr in initial_cluster.iter().flat_map(|m| m.values()) {
                require_loopback("--initial-cluster", &resolve("--initial-cluster", addr)?)?;
            }
            for addr in peer_addresses.values() {
                require_loopback("--peer-address", &resolve("--peer-address", addr)?)?;
            }
        }
        let source = match (&self.source, &self.source_cluster) {
            (Some(spec), Some(cluster)) => {
                let kubernetes = KubernetesOptions {
                    kubeconfig: self.kubeconfig.clone(),
                    context: self.kube_context.clone(),
                    namespaces: Vec::new(),
                };
                let spec = SourceSpec::parse(spec, kubernetes)
                    .map_err(|e| invalid(format!("--source: {e}")))?;
                Some((spec, cluster.clone()))
            }
            _ => None,
        };
        Ok(ServerConfig {
            node_id: self.node_id,
            agent_grace: self.agent_grace_period.as_std(),
            source,
            data_dir: self.data_dir.clone(),
            grpc_addr,
            http_addr,
            initial_cluster,
            peer_addresses,
            snapshot_threshold: self.snapshot_threshold,
            tls,
            ca_dir: self.ca_dir.clone(),
            cert_lifetime: self.cert_lifetime.as_std(),
            otlp: self.otlp.clone(),
        })
    }
}

fn require_loopback(flag: &str, addr: &SocketAddr) -> Result<(), ConfigError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(invalid(format!(
            "{flag}: {addr} is not a loopback address; --insecure (plaintext) only serves 127.0.0.1 or ::1"
        )))
    }
}

fn resolve(flag: &str, addr: &str) -> Result<SocketAddr, ConfigError> {
    check_peer_addr(addr).map_err(|e| invalid(format!("{flag}: {e}")))?;
    addr.to_socket_addrs()
        .map_err(|e| invalid(format!("{flag}: cannot resolve '{addr}': {e}")))?
        .next()
        .ok_or_else(|| invalid(format!("{flag}: '{addr}' resolves to no address")))
}

/// The address of a member being added: `HOST:PORT`, and with a plaintext
/// control plane a loopback one, as for the founding members.
pub fn check_member_addr(addr: &str, plaintext: bool) -> Result<(), ConfigError> {
    if plaintext {
        require_loopback("addr", &resolve("addr", addr)?)
    } else {
        check_peer_addr(addr).map_err(|e| invalid(format!("addr: {e}")))
    }
}

/// `HOST:PORT` with a non-zero port.
pub fn check_peer_addr(addr: &str) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("'{addr}' is not HOST:PORT"))?;
    if host.is_empty() {
        return Err(format!("'{addr}' has no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("'{addr}' has no valid port")),
    }
}

/// Parses `1=HOST:PORT,2=HOST:PORT`.
pub fn parse_initial_cluster(text: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    parse_members("--initial-cluster", text)
}

/// Parses `1=HOST:PORT,2=HOST:PORT` given to `flag`.
fn parse_members(flag: &str, text: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut members = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| invalid(format!("{flag}: '{part}' is not ID=HOST:PORT")))?;
        let id: NodeId = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| invalid(format!("{flag}: '{id}' is not a positive node id")))?;
        check_peer_addr(addr.trim()).map_err(|e| invalid(format!("{flag}: {e}")))?;
        if members.insert(id, addr.trim().to_string()).is_some() {
            return Err(invalid(format!("{flag}: node {id} is listed twice")));
        }
    }
    if members.is_empty() {
        return Err(invalid(format!("{flag} names no members")));
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(grpc: &str, cluster: Option<&str>) -> ServerArgs {
        ServerArgs {
            node_id: 1,
            data_dir: "/tmp/x".into(),
            grpc_addr: grpc.into(),
            http_addr: "127.0.0.1:7401".into(),
            initial_cluster: cluster.map(str::to_string),
            peer_address: Vec::new(),
            snapshot_threshold: 100,
            agent_grace_period: meridian_model::Duration::from_millis(30_000),
            source: None,
            source_cluster: None,
            kubeconfig: None,
            kube_context: None,
            ca_dir: None,
            cert_lifetime: meridian_model::Duration::from_millis(3_600_000),
            otlp: Default::default(),
        }
    }

    fn tls() -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: "node.pem".into(),
            key: "node.key".into(),
            bundle: "ca.pem".into(),
        })
    }

    #[test]
    fn parses_initial_cluster() {
        let members = parse_initial_cluster("1=127.0.0.1:1, 2=localhost:2").expect("valid");
        assert_eq!(members.len(), 2);
        assert_eq!(members[&2], "localhost:2");
        for bad in [
            "",
            "1",
            "x=127.0.0.1:1",
            "0=127.0.0.1:1",
            "1=a:1,1=b:2",
            "1=host",
        ] {
            assert!(parse_initial_cluster(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn insecure_is_loopback_only() {
        assert!(args("127.0.0.1:7400", None).validate(None).is_ok());
        let err = args("0.0.0.0:7400", None)
            .validate(None)
            .expect_err("not loopback");
        assert!(err.to_string().contains("loopback"), "{err}");
        assert!(args("127.0.0.1:7400", Some("1=10.1.2.3:7400"))
            .validate(None)
            .is_err());
        assert!(args("0.0.0.0:7400", Some("1=10.1.2.3:7400"))
            .validate(tls())
            .is_ok());
    }

    #[test]
    fn peer_addresses_name_other_nodes_and_stay_loopback_in_plaintext() {
        let mut with_peers = args("127.0.0.1:7400", Some("1=127.0.0.1:1,2=127.0.0.1:2"));
        with_peers.peer_address = vec!["2=127.0.0.1:9002".into(), "3=localhost:9003".into()];
        let config = with_peers.validate(None).expect("valid");
        assert_eq!(config.peer_addresses[&2], "127.0.0.1:9002");
        assert_eq!(config.peer_addresses[&3], "localhost:9003");
        with_peers.peer_address = vec!["1=127.0.0.1:9001".into()];
        let err = with_peers.validate(None).expect_err("names itself");
        assert!(err.to_string().contains("this node"), "{err}");
        with_peers.peer_address = vec!["2=10.0.0.2:7400".into()];
        assert!(with_peers.validate(None).is_err());
        assert!(with_peers.validate(tls()).is_ok());
        with_peers.peer_address = vec!["2=nope".into()];
        let err = with_peers.validate(tls()).expect_err("no port");
        assert!(err.to_string().contains("--peer-address"), "{err}");
    }

    #[test]
    fn initial_cluster_must_name_this_node() {
        let err = args("127.0.0.1:7400", Some("2=127.0.0.1:1"))
            .validate(None)
            .expect_err("missing self");
        assert!(err.to_string().contains("node 1"), "{err}");
    }
}
