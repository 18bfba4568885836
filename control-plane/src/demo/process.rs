//! The demo's child processes: started from Meridian's own binaries with
//! their output in a log file, killed (SIGKILL, as a crash) and started
//! again with the same arguments.

use anyhow::{bail, Context};
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Stdio,
};
use tokio::process::{Child, Command};

/// The binaries the demo runs: `meridian` itself and its siblings.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub meridian: PathBuf,
    pub agent: PathBuf,
    pub proxy: PathBuf,
}

impl Binaries {
    /// `meridian-agent` and `meridian-proxy` from the directory this binary
    /// runs from (one cargo target directory, or one install directory).
    pub fn beside_this_one() -> anyhow::Result<Binaries> {
        let meridian = std::env::current_exe().context("finding this binary")?;
        let dir = meridian.parent().unwrap_or(Path::new("."));
        let binaries = Binaries {
            agent: dir.join("meridian-agent"),
            proxy: dir.join("meridian-proxy"),
            meridian: meridian.clone(),
        };
        for binary in [&binaries.agent, &binaries.proxy] {
            if !binary.is_file() {
                bail!(
                    "{} is missing: the demo runs it beside {} (build all three with `cargo build --bins`)",
                    binary.display(),
                    meridian.display()
                );
            }
        }
        Ok(binaries)
    }
}

/// One child process the demo can kill and start again.
#[derive(Debug)]
pub struct Process {
    pub label: String,
    program: PathBuf,
    args: Vec<OsString>,
    /// Its working directory: the demo's, so it can be found and stopped.
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    pub fn new(
        label: impl Into<String>,
        program: &Path,
        args: impl IntoIterator<Item = impl Into<OsString>>,
        dir: &Path,
    ) -> Process {
        let label = label.into();
        Process {
            log: dir.join("logs").join(format!("{label}.log")),
            dir: dir.to_path_buf(),
            label,
            program: program.to_path_buf(),
            args: args.into_iter().map(Into::into).collect(),
            child: None,
        }
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        // The operator's own settings (MERIDIAN_SERVER, MERIDIAN_CERT, ...)
        // must not reach the demo's processes; only the log level does.
        for (name, _) in std::env::vars_os() {
            let name_text = name.to_string_lossy();
            if name_text.starts_with("MERIDIAN_") && name_text != "MERIDIAN_LOG" {
                command.env_remove(&name);
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Whether it was started and has exited by itself since.
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| !matches!(child.try_wait(), Ok(None)))
    }

    /// SIGKILL, then reap it.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// The end of its log, for an error message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

/// Background tasks that end when this is dropped.
pub struct Tasks(pub Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
