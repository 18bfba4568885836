//! One `meridian server` process: started on ephemeral ports, restartable on
//! the same data dir, killed on drop (its log printed if the test failed).

use crate::process::Process;
use meridian_identity::tls::Dialer;
use meridian_proto::v1::{admin_client::AdminClient, StatusRequest, StatusResponse};
use std::{
    path::{Path, PathBuf},
    time::Duration,
};
use tonic::transport::Channel;

#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub snapshot_threshold: u64,
    /// More `meridian server` flags.
    pub extra_args: Vec<String>,
    /// Flags before `server`: `--insecure`, or the node's TLS files.
    pub global_args: Vec<String>,
    /// How the test talks to the node.
    pub dialer: Dialer,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            snapshot_threshold: 10_000,
            extra_args: Vec::new(),
            global_args: vec!["--insecure".into()],
            dialer: Dialer::insecure(),
        }
    }
}

pub struct ServerNode {
    pub id: u64,
    pub grpc: String,
    pub http: String,
    pub data_dir: PathBuf,
    initial_cluster: Option<String>,
    options: ServerOptions,
    process: Process,
}

impl ServerNode {
    /// Prepares (does not start) a node with fresh ports in `root`.
    pub fn new(root: &Path, id: u64, options: ServerOptions) -> Self {
        ServerNode {
            id,
            grpc: format!("127.0.0.1:{}", crate::free_port()),
            http: format!("127.0.0.1:{}", crate::free_port()),
            data_dir: root.join(format!("node-{id}")),
            initial_cluster: None,
            options,
            process: Process::new(
                "meridian",
                Vec::new(),
                root.join(format!("node-{id}.log")),
                "info,openraft=info",
            ),
        }
    }

    /// `ID=ADDR,...` for a set of nodes.
    pub fn initial_cluster(nodes: &[&ServerNode]) -> String {
        nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.grpc))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn with_initial_cluster(mut self, members: &str) -> Self {
        self.initial_cluster = Some(members.to_string());
        self
    }

    /// More `meridian server` flags for this node only.
    pub fn with_args(mut self, args: impl IntoIterator<Item = String>) -> Self {
        self.options.extra_args.extend(args);
        self
    }

    /// Starts the node (again, on the same data dir and ports, after a kill).
    pub fn start(&mut self) {
        let mut args: Vec<String> = self.options.global_args.clone();
        args.extend([
            "server".into(),
            "--node-id".into(),
            self.id.to_string(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
            "--grpc-addr".into(),
            self.grpc.clone(),
            "--http-addr".into(),
            self.http.clone(),
            "--snapshot-threshold".into(),
            self.options.snapshot_threshold.to_string(),
        ]);
        args.extend(self.options.extra_args.iter().cloned());
        if let Some(members) = &self.initial_cluster {
            args.extend(["--initial-cluster".to_string(), members.clone()]);
        }
        self.process.args = args;
        self.process.start();
    }

    /// SIGKILL: no shutdown, no flush beyond what the node already made durable.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// The OS process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// Sends `signal` (`STOP`, `CONT`) to the node's process, if it runs.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let sent = std::process::Command::new("kill")
                .args([format!("-{signal}"), pid.to_string()])
                .status();
            assert!(sent.is_ok_and(|s| s.success()), "kill -{signal} {pid}");
        }
    }

    /// Whether the process has exited by itself (reaping it if so).
    pub fn exited(&mut self) -> bool {
        self.process.exited()
    }

    /// How the process ended, once it has exited by itself (reaping it).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.process.exit_status()
    }

    /// The last `lines` of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    pub async fn client(&self) -> Option<AdminClient<Channel>> {
        let channel = self.options.dialer.connect(&self.grpc).await.ok()?;
        Some(AdminClient::new(channel))
    }

    pub async fn status(&self) -> Option<StatusResponse> {
        let mut client = self.client().await?;
        tokio::time::timeout(Duration::from_secs(15), client.status(StatusRequest {}))
            .await
            .ok()?
            .ok()
            .map(|r| r.into_inner())
    }
}

/// The leader every running node in `nodes` agrees on, once they do.
pub async fn agreed_leader(nodes: &[&ServerNode]) -> u64 {
    crate::eventually(
        Duration::from_secs(30),
        "all running nodes to agree on a leader",
        || async {
            let mut leader = None;
            for node in nodes.iter().filter(|n| n.is_running()) {
                let status = node.status().await?;
                let l = status.leader?;
                if leader.is_some_and(|prev| prev != l) {
                    return None;
                }
                leader = Some(l);
            }
            leader.filter(|l| nodes.iter().any(|n| n.id == *l && n.is_running()))
        },
    )
    .await
}

/// Starts a cluster of `count` nodes in `root`, each founding member.
pub fn start_cluster(root: &Path, count: u64, options: ServerOptions) -> Vec<ServerNode> {
    start_cluster_with(root, count, |_| options.clone())
}

/// Like [`start_cluster`], with each node's own options (its certificate, say).
pub fn start_cluster_with(
    root: &Path,
    count: u64,
    options: impl Fn(u64) -> ServerOptions,
) -> Vec<ServerNode> {
    let nodes: Vec<ServerNode> = (1..=count)
        .map(|id| ServerNode::new(root, id, options(id)))
        .collect();
    let members = ServerNode::initial_cluster(&nodes.iter().collect::<Vec<_>>());
    let mut nodes: Vec<ServerNode> = nodes
        .into_iter()
        .map(|n| n.with_initial_cluster(&members))
        .collect();
    for node in &mut nodes {
        node.start();
    }
    nodes
}
