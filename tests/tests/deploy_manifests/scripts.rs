//! Shell scripts of the pods (the control plane's entrypoint, the init
//! containers that seed credentials) run against the pod's volumes as
//! directories, with a stand-in `meridian` that reports what it was given.

use crate::workload::{volume_of, Pod, Run};
use k8s_openapi::api::core::v1::{Container, PodSpec};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

/// Prints, as `KEY=VALUE` lines, what `meridian server` would be started with.
const STAND_IN: &str = r#"#!/bin/sh
echo "node_id=${MERIDIAN_NODE_ID-}"
echo "cert=${MERIDIAN_CERT-}"
echo "key=${MERIDIAN_KEY-}"
echo "initial_cluster=${MERIDIAN_INITIAL_CLUSTER-<unset>}"
echo "ca_dir=${MERIDIAN_CA_DIR-}"
echo "args=$*"
"#;

/// Shell init containers seed the trust bundle where the binary reads it.
pub(crate) fn check_init_containers(pod: &Pod) {
    let Some(main) = pod
        .spec
        .containers
        .iter()
        .find(|c| Run::new(c).binary.is_some())
    else {
        return;
    };
    let run = Run::new(main);
    for init in pod.spec.init_containers.iter().flatten() {
        let sandbox = Sandbox::new(pod.spec);
        sandbox.fill_secrets(&["ca.pem".to_string()]);
        sandbox.run(init, "pod-0");
        let bundle = run
            .setting("--trust-bundle")
            .unwrap_or_else(|| panic!("{}: --trust-bundle", pod.owner));
        let mode =
            std::fs::metadata(sandbox.host(main, &bundle)).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(
            mode.ok(),
            Some(0o600),
            "{}: init container {} does not seed {bundle}",
            pod.owner,
            init.name
        );
    }
}

/// A pod's volumes as directories, to run its shell scripts against.
pub(crate) struct Sandbox<'a> {
    dir: tempfile::TempDir,
    spec: &'a PodSpec,
}

impl<'a> Sandbox<'a> {
    pub(crate) fn new(spec: &'a PodSpec) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::create_dir_all(dir.path().join("bin")).expect("mkdir");
        let exe = dir.path().join("bin/meridian");
        std::fs::write(&exe, STAND_IN).expect("write the stand-in");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Sandbox { dir, spec }
    }

    pub(crate) fn host(&self, c: &Container, path: &str) -> PathBuf {
        let (volume, rest) = volume_of(c, path);
        self.dir.path().join("volumes").join(volume).join(rest)
    }

    pub(crate) fn fill_secrets(&self, files: &[String]) {
        for v in self
            .spec
            .volumes
            .iter()
            .flatten()
            .filter(|v| v.secret.is_some())
        {
            let dir = self.dir.path().join("volumes").join(&v.name);
            std::fs::create_dir_all(&dir).expect("mkdir");
            for file in files {
                std::fs::write(dir.join(file), format!("{}/{file}", v.name)).expect("write");
                std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o440))
                    .expect("chmod");
            }
        }
        for v in self
            .spec
            .volumes
            .iter()
            .flatten()
            .filter(|v| v.secret.is_none())
        {
            std::fs::create_dir_all(self.dir.path().join("volumes").join(&v.name)).expect("mkdir");
        }
    }

    /// Runs `c`'s `sh -c` command as pod `pod_name`; its `KEY=VALUE` output.
    pub(crate) fn run(&self, c: &Container, pod_name: &str) -> BTreeMap<String, String> {
        let command = c.command.clone().unwrap_or_default();
        assert!(
            command.first().is_some_and(|sh| sh.ends_with("/sh")),
            "container {}: not a shell script",
            c.name
        );
        let mut cmd = Command::new("/bin/sh");
        cmd.args(&command[1..])
            .args(c.args.iter().flatten())
            .env_clear();
        cmd.env(
            "PATH",
            format!("{}:/usr/bin:/bin", self.dir.path().join("bin").display()),
        );
        for e in c.env.iter().flatten() {
            let field = e
                .value_from
                .as_ref()
                .and_then(|f| f.field_ref.as_ref())
                .map(|f| f.field_path.as_str());
            match (&e.value, field) {
                (Some(v), _) if v.starts_with('/') => cmd.env(&e.name, self.host(c, v)),
                (Some(v), _) => cmd.env(&e.name, v),
                (None, Some("metadata.name")) => cmd.env(&e.name, pod_name),
                _ => &mut cmd,
            };
        }
        let out = cmd.output().expect("run /bin/sh");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "container {} as {pod_name}: {}{stdout}",
            c.name,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.into(), v.into()))
            .collect()
    }
}
