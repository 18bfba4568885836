//! Pods, containers and the Meridian binaries they run.

use crate::load::Object;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use meridian_tests::binary;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// What a kustomization builds, as the checks see it.
pub(crate) struct Build {
    pub(crate) objects: Vec<Object>,
}

/// A pod template and what owns it.
pub(crate) struct Pod<'a> {
    pub(crate) owner: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) annotations: BTreeMap<String, String>,
    pub(crate) spec: &'a PodSpec,
    pub(crate) statefulset: Option<&'a StatefulSet>,
}

impl Build {
    pub(crate) fn pods(&self) -> Vec<Pod<'_>> {
        let mut pods = Vec::new();
        for object in &self.objects {
            let (kind, meta, template, sts) = match object {
                Object::StatefulSet(s) => (
                    "StatefulSet",
                    &s.metadata,
                    s.spec.as_ref().map(|s| (&s.template, &s.selector)),
                    Some(s),
                ),
                Object::Deployment(d) => (
                    "Deployment",
                    &d.metadata,
                    d.spec.as_ref().map(|s| (&s.template, &s.selector)),
                    None,
                ),
                Object::DaemonSet(d) => (
                    "DaemonSet",
                    &d.metadata,
                    d.spec.as_ref().map(|s| (&s.template, &s.selector)),
                    None,
                ),
                _ => continue,
            };
            let owner = format!("{kind} {}", meta.name.clone().unwrap_or_default());
            let (template, selector) = template.unwrap_or_else(|| panic!("{owner} has no spec"));
            let template_meta = template.metadata.clone().unwrap_or_default();
            let labels = template_meta.labels.unwrap_or_default();
            let selected = selector.match_labels.clone().unwrap_or_default();
            assert!(
                !selected.is_empty() && subset(&selected, &labels),
                "{owner}: selector {selected:?} does not match its pods' labels"
            );
            pods.push(Pod {
                spec: template
                    .spec
                    .as_ref()
                    .unwrap_or_else(|| panic!("{owner} has no pod spec")),
                owner,
                labels,
                annotations: template_meta.annotations.unwrap_or_default(),
                statefulset: sts,
            });
        }
        pods
    }

    pub(crate) fn services(&self) -> impl Iterator<Item = &Service> {
        self.objects.iter().filter_map(|o| match o {
            Object::Service(s) => Some(s),
            _ => None,
        })
    }

    pub(crate) fn config_map(&self, name: &str) -> Option<&ConfigMap> {
        self.objects.iter().find_map(|o| match o {
            Object::ConfigMap(c) if c.metadata.name.as_deref() == Some(name) => Some(c),
            _ => None,
        })
    }
}

pub(crate) fn subset(small: &BTreeMap<String, String>, big: &BTreeMap<String, String>) -> bool {
    small.iter().all(|(k, v)| big.get(k) == Some(v))
}

/// The Meridian binaries a container may run.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Binary {
    Server,
    Agent,
    Proxy,
}

impl Binary {
    /// `--help` of the built binary (of `meridian server` for the server), run once.
    pub(crate) fn help(self) -> &'static str {
        static HELP: [OnceLock<String>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        let (name, args, slot): (&str, &[&str], _) = match self {
            Binary::Server => ("meridian", &["server", "--help"], &HELP[0]),
            Binary::Agent => ("meridian-agent", &["--help"], &HELP[1]),
            Binary::Proxy => ("meridian-proxy", &["--help"], &HELP[2]),
        };
        slot.get_or_init(|| {
            let out = Command::new(binary(name))
                .args(args)
                .output()
                .expect("run --help");
            assert!(out.status.success(), "{name} {args:?} failed");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    }

    /// The HTTP listener's flag and the paths it serves.
    pub(crate) fn http(self) -> Option<(&'static str, &'static [&'static str])> {
        match self {
            Binary::Server => Some(("--http-addr", &["/healthz", "/readyz", "/metrics"])),
            Binary::Proxy => Some((
                "--admin-addr",
                &["/ready", "/config_dump", "/clusters", "/metrics"],
            )),
            Binary::Agent => None,
        }
    }

    /// Flags naming paths the process writes (enrolment rewrites the certificate files).
    pub(crate) fn writes(self) -> &'static [&'static str] {
        match self {
            Binary::Server => &["--data-dir"],
            Binary::Agent => &["--cert", "--key", "--trust-bundle"],
            Binary::Proxy => &["--state-dir", "--cert", "--key", "--trust-bundle"],
        }
    }
}

/// A container with the binary it runs (directly, or by `exec BINARY "$@"`
/// at the end of a `sh -c` entrypoint) and that binary's help text.
pub(crate) struct Run<'a> {
    pub(crate) c: &'a Container,
    pub(crate) binary: Option<Binary>,
    pub(crate) help: &'static str,
}

impl<'a> Run<'a> {
    pub(crate) fn new(c: &'a Container) -> Self {
        let command = c.command.clone().unwrap_or_default();
        let name = match command.as_slice() {
            [sh, flag, script, ..] if sh.ends_with("/sh") && flag == "-c" => script
                .lines()
                .filter_map(|l| l.trim().strip_prefix("exec ")?.strip_suffix(" \"$@\""))
                .next_back()
                .map(String::from),
            [exe, ..] => Some(exe.rsplit('/').next().unwrap_or_default().to_string()),
            [] => panic!(
                "container {}: give its command explicitly (the image has no entrypoint)",
                c.name
            ),
        };
        let args = c.args.clone().unwrap_or_default();
        let binary = match name.as_deref() {
            None => None,
            Some("meridian") => {
                assert_eq!(
                    args.first().map(String::as_str),
                    Some("server"),
                    "container {}: meridian runs `server`",
                    c.name
                );
                Some(Binary::Server)
            }
            Some("meridian-agent") => Some(Binary::Agent),
            Some("meridian-proxy") => Some(Binary::Proxy),
            Some(other) => panic!("container {}: runs {other}, not a Meridian binary", c.name),
        };
        let help = binary.map(Binary::help).unwrap_or_default();
        Run { c, binary, help }
    }

    pub(crate) fn args(&self) -> Vec<String> {
        self.c.args.clone().unwrap_or_default()
    }

    /// A flag's value from the arguments, else its variable's literal value.
    pub(crate) fn setting(&self, flag: &str) -> Option<String> {
        let args = self.args();
        for (i, arg) in args.iter().enumerate() {
            if let Some(value) = arg
                .strip_prefix(flag)
                .and_then(|rest| rest.strip_prefix('='))
            {
                return Some(value.to_string());
            }
            if arg == flag {
                return args.get(i + 1).cloned();
            }
        }
        let line = self
            .help
            .lines()
            .skip_while(|l| !l.contains(&format!("{flag} ")))
            .take(3)
            .collect::<String>();
        let env = line.split("[env: ").nth(1)?.split('=').next()?.to_string();
        self.env(&env)
    }

    pub(crate) fn env(&self, name: &str) -> Option<String> {
        let env = self.c.env.as_deref().unwrap_or_default();
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    }

    pub(crate) fn port(&self, port: &IntOrString) -> Option<i32> {
        declared_port(self.c, port)
    }

    /// The port of a listener flag's `HOST:PORT`, whose host the kubelet and
    /// Services must reach: not loopback (every flag's default).
    pub(crate) fn listener(&self, flag: &str) -> i32 {
        let addr = self.setting(flag).unwrap_or_else(|| {
            panic!(
                "container {}: set {flag}; its default is loopback",
                self.c.name
            )
        });
        let (host, port) = addr
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("{flag} {addr}: not HOST:PORT"));
        assert!(
            ["0.0.0.0", "[::]"].contains(&host) || host.starts_with("$("),
            "container {}: {flag} {addr} is unreachable from outside the pod",
            self.c.name
        );
        let port = port
            .parse()
            .unwrap_or_else(|_| panic!("{flag} {addr}: no port"));
        assert!(
            self.port(&IntOrString::Int(port)).is_some(),
            "container {}: {flag} port {port} is not a containerPort",
            self.c.name
        );
        port
    }
}

/// The containerPort a Service or probe port names (by name or number).
pub(crate) fn declared_port(c: &Container, port: &IntOrString) -> Option<i32> {
    let mut ports = c.ports.iter().flatten();
    match port {
        IntOrString::Int(n) => ports.find(|p| p.container_port == *n),
        IntOrString::String(name) => ports.find(|p| p.name.as_ref() == Some(name)),
    }
    .map(|p| p.container_port)
}

/// Where a container path lives: (volume, path inside it). The root
/// filesystem is read-only, so everything read or written is on a volume.
pub(crate) fn volume_of(c: &Container, path: &str) -> (String, PathBuf) {
    let mounts = c.volume_mounts.as_deref().unwrap_or_default();
    let mount = mounts
        .iter()
        .filter(|m| Path::new(path).starts_with(&m.mount_path))
        .max_by_key(|m| m.mount_path.len())
        .unwrap_or_else(|| panic!("container {}: {path} is on no volume", c.name));
    let rest = Path::new(path)
        .strip_prefix(&mount.mount_path)
        .expect("a prefix");
    (mount.name.clone(), rest.to_path_buf())
}
