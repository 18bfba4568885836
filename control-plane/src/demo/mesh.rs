//! The demo's mesh, as real processes on loopback: a three-node control
//! plane over mutual TLS with its own CA, two member clusters in two regions
//! (each with its agent, echo upstreams and a meridian-proxy), all in one
//! temporary directory that goes when the mesh does.

use super::{
    control::ControlPlane,
    pki::{tls_args, Pki},
    process::{Binaries, Process},
    traffic,
};
use anyhow::{bail, Context};
use meridian_identity::{spiffe::Identity, tls::TlsFiles};
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener},
    path::Path,
    time::{Duration, Instant},
};

/// The host name clients call.
pub const HOST: &str = "checkout.shop";

/// One member cluster: its name, region, zone and the loopback address its
/// proxy's listeners bind (each cluster's proxy listens on the same port).
pub struct ClusterSite {
    pub name: &'static str,
    pub region: &'static str,
    pub zone: &'static str,
    pub proxy_ip: Ipv4Addr,
}

pub const CLUSTERS: [ClusterSite; 2] = [
    ClusterSite {
        name: "east",
        region: "us-east",
        zone: "us-east-1a",
        proxy_ip: Ipv4Addr::new(127, 0, 0, 1),
    },
    ClusterSite {
        name: "west",
        region: "eu-west",
        zone: "eu-west-1a",
        proxy_ip: Ipv4Addr::new(127, 0, 0, 2),
    },
];

/// The instances each cluster runs: (service, instance).
const INSTANCES: [(&str, &str); 3] = [
    ("checkout-v1", "a"),
    ("checkout-v1", "b"),
    ("checkout-v2", "a"),
];

pub struct Node {
    pub id: u64,
    pub grpc: SocketAddr,
    process: Process,
}

/// An echo upstream; it answers with its name, `CLUSTER/SERVICE/INSTANCE`.
pub struct Upstream {
    pub cluster: &'static str,
    process: Process,
}

pub struct Proxy {
    /// Its xDS node id, `CLUSTER-proxy`.
    pub name: String,
    pub cluster: &'static str,
    /// Where clients reach the checkout service through it.
    pub listener: SocketAddr,
    pub admin: SocketAddr,
    process: Process,
}

pub struct Mesh {
    /// Everything on disk; removed when the mesh is dropped.
    dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
    pub upstreams: Vec<Upstream>,
    agents: Vec<Process>,
    pub proxies: Vec<Proxy>,
    pub control: ControlPlane,
    /// The operator's credentials, for the CLI commands the demo prints.
    pub operator: TlsFiles,
    service_port: u16,
}

/// A port free on `ip` now, taken below the kernel's ephemeral range: a port
/// from that range (what binding port 0 gives) can be taken by any outgoing
/// connection's source port before the process it is meant for binds it.
fn free_port(ip: Ipv4Addr) -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let (low, high) = (20_000, ephemeral_low.max(22_000));
    // Two demos (or a demo and the tests) start at different places.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id();
    let _ = NEXT.compare_exchange(0, seed % (high - low), Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..(high - low) {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % (high - low);
        let Ok(port) = u16::try_from(low + offset) else {
            continue;
        };
        if TcpListener::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port between {low} and {high}")
}

/// A port free on every cluster's proxy address, for the service.
fn service_port() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let port = free_port(CLUSTERS[0].proxy_ip)?;
        if CLUSTERS
            .iter()
            .all(|c| TcpListener::bind((c.proxy_ip, port)).is_ok())
        {
            return Ok(port);
        }
    }
    bail!("no port is free on every proxy address (127.0.0.1, 127.0.0.2)")
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

impl Mesh {
    /// Lays the mesh out on disk (CA, certificates, agents' sources) and
    /// picks its ports; nothing runs yet.
    pub fn prepare(binaries: &Binaries) -> anyhow::Result<Mesh> {
        let dir = tempfile::Builder::new()
            .prefix("meridian-demo-")
            .tempdir()
            .context("creating the demo's temporary directory")?;
        let root = dir.path();
        std::fs::create_dir_all(root.join("logs"))?;
        let pki = Pki::create(root)?;
        let operator = pki.issue(
            "operator",
            Identity::Admin {
                name: "demo".into(),
            },
        )?;

        let grpc: Vec<(u64, u16)> = (1..=3)
            .map(|id| Ok((id, free_port(Ipv4Addr::LOCALHOST)?)))
            .collect::<anyhow::Result<_>>()?;
        let initial_cluster = grpc
            .iter()
            .map(|(id, port)| format!("{id}={}", loopback(*port)))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (id, port) in &grpc {
            let files = pki.issue(&format!("node-{id}"), Identity::Node(*id))?;
            let mut args = tls_args(&files);
            args.extend([
                "server".into(),
                "--node-id".into(),
                id.to_string(),
                "--data-dir".into(),
                root.join(format!("node-{id}")).display().to_string(),
                "--ca-dir".into(),
                pki.ca.path().display().to_string(),
                "--grpc-addr".into(),
                loopback(*port).to_string(),
                "--http-addr".into(),
                loopback(free_port(Ipv4Addr::LOCALHOST)?).to_string(),
                "--initial-cluster".into(),
                initial_cluster.clone(),
            ]);
            nodes.push(Node {
                id: *id,
                grpc: loopback(*port),
                process: Process::new(format!("node-{id}"), &binaries.meridian, args, root),
            });
        }
        let control = ControlPlane::new(
            &nodes
                .iter()
                .map(|n| (n.id, n.grpc.to_string()))
                .collect::<Vec<_>>(),
            operator.clone(),
        )?;

        let mut upstreams = Vec::new();
        let mut agents = Vec::new();
        let mut proxies = Vec::new();
        let service_port = service_port()?;
        for site in &CLUSTERS {
            let mut source = String::new();
            for service in ["checkout-v1", "checkout-v2"] {
                source.push_str(&format!("- service: shop/{service}\n  endpoints:\n"));
                for (_, instance) in INSTANCES.iter().filter(|(s, _)| *s == service) {
                    let addr = loopback(free_port(Ipv4Addr::LOCALHOST)?);
                    let name = format!("{}/{service}/{instance}", site.name);
                    source.push_str(&format!(
                        "  - {{address: {}, port: {}, zone: {}}}\n",
                        addr.ip(),
                        addr.port(),
                        site.zone
                    ));
                    let args = [
                        "demo-upstream".to_string(),
                        "--name".into(),
                        name.clone(),
                        "--listen".into(),
                        addr.to_string(),
                    ];
                    upstreams.push(Upstream {
                        process: Process::new(
                            name.replace('/', "-"),
                            &binaries.meridian,
                            args,
                            root,
                        ),
                        cluster: site.name,
                    });
                }
            }
            let source_file = root.join(format!("{}-endpoints.yaml", site.name));
            std::fs::write(&source_file, source)?;
            let files = pki.issue(
                &format!("{}-agent", site.name),
                Identity::Agent {
                    cluster: site.name.into(),
                },
            )?;
            let mut args = tls_args(&files);
            args.extend([
                "--cluster".into(),
                site.name.into(),
                "--control-plane".into(),
                control.servers.clone(),
                "--source".into(),
                format!("file:{}", source_file.display()),
                "--refresh-interval".into(),
                "1s".into(),
            ]);
            agents.push(Process::new(
                format!("{}-agent", site.name),
                &binaries.agent,
                args,
                root,
            ));

            let name = format!("{}-proxy", site.name);
            let files = pki.issue(
                &name,
                Identity::Proxy {
                    cluster: site.name.into(),
                    id: name.clone(),
                },
            )?;
            let admin = loopback(free_port(Ipv4Addr::LOCALHOST)?);
            let mut args = tls_args(&files);
            args.extend([
                "--xds".into(),
                control.servers.clone(),
                "--node-id".into(),
                name.clone(),
                "--cluster".into(),
                site.name.into(),
                "--admin-addr".into(),
                admin.to_string(),
                "--state-dir".into(),
                root.join(&name).display().to_string(),
                "--outbound-bind".into(),
                site.proxy_ip.to_string(),
            ]);
            proxies.push(Proxy {
                process: Process::new(name.clone(), &binaries.proxy, args, root),
                name,
                cluster: site.name,
                listener: SocketAddr::new(IpAddr::V4(site.proxy_ip), service_port),
                admin,
            });
        }
        Ok(Mesh {
            dir,
            nodes,
            upstreams,
            agents,
            proxies,
            control,
            operator,
            service_port,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The mesh's objects: clusters, the checkout service split 80/20
    /// between two versions, and a failover order for each version.
    pub fn manifests(&self, v1_weight: u32) -> String {
        let port = self.service_port;
        let mut text = String::new();
        for site in &CLUSTERS {
            text.push_str(&format!(
                "kind: Cluster\nmetadata: {{name: {}}}\nspec: {{region: {}, zone: {}}}\n---\n",
                site.name, site.region, site.zone
            ));
        }
        for service in ["checkout", "checkout-v1", "checkout-v2"] {
            text.push_str(&format!(
                "kind: Service\nmetadata: {{name: {service}, namespace: shop}}\nspec: {{protocol: http, port: {port}}}\n---\n"
            ));
        }
        for service in ["checkout-v1", "checkout-v2"] {
            text.push_str(&format!(
                "kind: FailoverPolicy\nmetadata: {{name: {service}, namespace: shop}}\nspec: {{service: shop/{service}, order: [east, west]}}\n---\n"
            ));
        }
        text.push_str(&self.split(v1_weight));
        text
    }

    /// The traffic split, `v1_weight`% to v1 and the rest to v2.
    pub fn split(&self, v1_weight: u32) -> String {
        format!(
            "kind: TrafficSplit\nmetadata: {{name: checkout, namespace: shop}}\nspec: {{service: shop/checkout, backends: [{{service: checkout-v1, weight: {v1_weight}}}, {{service: checkout-v2, weight: {}}}]}}\n",
            100 - v1_weight
        )
    }

    /// Starts the control plane and waits for its leader.
    pub async fn start_control_plane(&mut self) -> anyhow::Result<u64> {
        for node in &mut self.nodes {
            node.process.start()?;
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let state = self.control.state().await;
            let all_answer = state.nodes.iter().all(|(_, s)| s.is_some());
            if let (true, Some(leader)) = (all_answer, state.leader()) {
                return Ok(leader);
            }
            self.check_running()?;
            if Instant::now() > deadline {
                bail!("the control plane elected no leader within 90 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Starts upstreams, agents and proxies, and waits until each proxy
    /// routes a request to its own cluster.
    pub async fn start_data_plane(&mut self) -> anyhow::Result<()> {
        for upstream in &mut self.upstreams {
            upstream.process.start()?;
        }
        for process in &mut self.agents {
            process.start()?;
        }
        for proxy in &mut self.proxies {
            proxy.process.start()?;
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        for i in 0..self.proxies.len() {
            let (listener, own) = (
                self.proxies[i].listener,
                format!("{}/", self.proxies[i].cluster),
            );
            loop {
                match traffic::once(listener, HOST).await {
                    Ok(upstream) if upstream.starts_with(&own) => break,
                    _ if Instant::now() > deadline => {
                        bail!(
                            "{} routed no request to its own cluster within 90 s",
                            self.proxies[i].name
                        )
                    }
                    _ => {
                        self.check_running()?;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
        Ok(())
    }

    /// An error naming the first process that exited by itself, with the
    /// end of its log.
    fn check_running(&mut self) -> anyhow::Result<()> {
        let processes = self
            .nodes
            .iter_mut()
            .map(|n| &mut n.process)
            .chain(self.agents.iter_mut())
            .chain(self.proxies.iter_mut().map(|p| &mut p.process));
        for process in processes {
            if process.exited() {
                bail!("{} exited:\n{}", process.label, process.log_tail());
            }
        }
        Ok(())
    }

    pub fn node_mut(&mut self, id: u64) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|n| n.id == id)
    }

    /// Kills every upstream of `cluster` (a crash: SIGKILL).
    pub async fn kill_upstreams(&mut self, cluster: &str) {
        for upstream in self.upstreams.iter_mut().filter(|u| u.cluster == cluster) {
            upstream.process.kill().await;
        }
    }

    pub fn start_upstreams(&mut self, cluster: &str) -> anyhow::Result<()> {
        for upstream in self.upstreams.iter_mut().filter(|u| u.cluster == cluster) {
            upstream.process.start()?;
        }
        Ok(())
    }

    /// Stops every process (SIGKILL, then reaped); the directory goes with
    /// the mesh.
    pub async fn shutdown(&mut self) {
        let processes = self
            .proxies
            .iter_mut()
            .map(|p| &mut p.process)
            .chain(self.agents.iter_mut())
            .chain(self.upstreams.iter_mut().map(|u| &mut u.process))
            .chain(self.nodes.iter_mut().map(|n| &mut n.process));
        for process in processes {
            process.kill().await;
        }
    }
}

impl Node {
    pub async fn kill(&mut self) {
        self.process.kill().await;
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        self.process.start()
    }
}
