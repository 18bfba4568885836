//! One `meridian-agent` process, killed on drop (its log printed if the test failed).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

pub struct AgentProcess {
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
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
        let mut args: Vec<String> = vec![
            "--insecure".into(),
            "--cluster".into(),
            cluster.into(),
            "--control-plane".into(),
            control_planes.join(","),
            "--source".into(),
            source.into(),
            "--refresh-interval".into(),
            "200ms".into(),
            "--agent-id".into(),
            name.into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        AgentProcess {
            args,
            child: None,
            log: root.join(format!("{name}.log")),
        }
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open agent log");
        let child = Command::new(crate::binary("meridian-agent"))
            .args(&self.args)
            .env("MERIDIAN_LOG", "info,meridian_federation=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn meridian-agent");
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- agent log ({}) ---\n{}",
                self.log.display(),
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
    }
}
