//! One `meridian-agent` process, killed on drop.

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
