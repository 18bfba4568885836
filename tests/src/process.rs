//! A child process of a test: started with its output in a log file, killed
//! on drop, its log's tail printed if the test failed.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
};

pub struct Process {
    binary: &'static str,
    pub args: Vec<String>,
    log_level: &'static str,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    /// `binary` from the workspace's target dir; `log_level` becomes MERIDIAN_LOG.
    pub fn new(
        binary: &'static str,
        args: Vec<String>,
        log: PathBuf,
        log_level: &'static str,
    ) -> Self {
        Process {
            binary,
            args,
            log_level,
            log,
            child: None,
        }
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.binary);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the process log");
        let child = Command::new(crate::binary(self.binary))
            .args(&self.args)
            .env("MERIDIAN_LOG", self.log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.binary));
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown, nothing flushed beyond what the process made durable.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM: a graceful shutdown.
    pub fn terminate(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(_))) | None => {
                self.child = None;
                true
            }
            _ => false,
        }
    }

    /// How the process ended, once it has (reaping it); `None` while it
    /// runs, or if it was never started or already reaped.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Where the process panicked and why (a backtrace may push that out
    /// of the tail), each with the line after it, or nothing.
    fn panics(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut found = String::new();
        for (i, line) in lines.iter().enumerate() {
            if line.contains("panicked at") {
                let next = lines.get(i + 1).copied().unwrap_or_default();
                found.push_str(&format!("[panic] {line}\n[panic] {next}\n"));
            }
        }
        found
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- {} log ({}) ---\n{}{}",
                self.binary,
                self.log.display(),
                self.panics(),
                self.log_tail(40)
            );
        }
    }
}
