//! One `meridian-agent` process, killed on drop, and the endpoint files its
//! file source reads.

use crate::process::Process;
use std::path::Path;

pub struct AgentProcess {
    process: Process,
}

impl AgentProcess {
    /// An agent for `cluster` with `source`, talking to `control_planes`.
    pub fn new(
        root: &Path,
        name: &str,
        cluster: &str,
        control_planes: &[&str],
        source: &str,
        extra: &[&str],
    ) -> Self {
        let mut args: Vec<String> = [
            "--insecure",
            "--cluster",
            cluster,
            "--control-plane",
            &control_planes.join(","),
            "--source",
            source,
            "--refresh-interval",
            "200ms",
            "--agent-id",
            name,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        let log = root.join(format!("{name}.log"));
        AgentProcess {
            process: Process::new(
                "meridian-agent",
                args,
                log,
                "info,meridian_federation=debug",
            ),
        }
    }

    /// Mutual TLS to the control plane instead of `--insecure`: the agent's
    /// `--cert`, `--key`, `--trust-bundle` (and `--token`) flags.
    pub fn secure(mut self, tls_args: &[&str]) -> Self {
        self.process.args.retain(|a| a != "--insecure");
        self.process
            .args
            .extend(tls_args.iter().map(|a| a.to_string()));
        self
    }

    pub fn start(&mut self) {
        self.process.start();
    }

    pub fn kill(&mut self) {
        self.process.kill();
    }
}

/// Replaces the agent's endpoint file at `path` with `text`: written beside
/// it, then renamed, so the agent never reads half a file.
pub fn write_endpoint_file(path: &Path, text: &str) {
    let staging = path.with_extension("tmp");
    std::fs::write(&staging, text).expect("write the endpoint file");
    std::fs::rename(&staging, path).expect("replace the endpoint file");
}

/// An endpoint file naming web.shop's endpoints on these ports of
/// 127.0.0.1, in zone us-east-1a.
pub fn local_web_endpoints(ports: &[u16]) -> String {
    let items: Vec<String> = ports
        .iter()
        .map(|p| format!("{{address: 127.0.0.1, port: {p}, zone: us-east-1a}}"))
        .collect();
    format!("- service: shop/web\n  endpoints: [{}]\n", items.join(", "))
}
