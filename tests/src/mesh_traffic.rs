//! The data plane while the control plane is broken on purpose: a
//! `meridian-agent` streaming a changing set of endpoints from a file, a
//! `meridian-proxy` routing web.shop to them, and a client counting every
//! request the proxy failed. Every endpoint ever named stays up, so a
//! failed request is the mesh's fault, not an upstream's. The agent and
//! the proxy dial every control-plane node through a relay of their own
//! (`links`), so a test can cut them off from a node.

use crate::{
    agent::{local_web_endpoints, write_endpoint_file, AgentProcess},
    proxy::{self, ProxyProcess},
    relay::Relay,
    upstream::Upstream,
    workload::Rng,
};
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};
use tokio::task::JoinHandle;

/// The cluster the agent and the proxy belong to.
pub const CLUSTER: &str = "east";

/// What the proxy's client saw.
#[derive(Debug, Default)]
pub struct Requests {
    pub sent: usize,
    pub failed: usize,
    /// The first few failures, `HTTP CODE: BODY` or `no response`.
    pub failures: Vec<String>,
}

impl Requests {
    /// Failed requests per 10,000 sent.
    pub fn failed_per_10k(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        self.failed as f64 * 10_000.0 / self.sent as f64
    }
}

pub struct MeshTraffic {
    /// The proxy's listener for web.shop.
    pub proxy_addr: String,
    pub upstreams: Vec<Upstream>,
    /// One per control-plane node, in the order given: the agent's and the
    /// proxy's way to it.
    pub links: Vec<Relay>,
    source: PathBuf,
    /// While driven: the client and the file's changes.
    driven: Option<Driven>,
    _agent: AgentProcess,
    _proxy: ProxyProcess,
}

impl MeshTraffic {
    /// Applies cluster east and web.shop through `control_planes[0]`, starts
    /// `upstreams` upstreams, an agent and a proxy that know every control
    /// plane (through `links`), and waits until the proxy routes.
    pub async fn start(root: &Path, control_planes: &[String], upstreams: usize) -> MeshTraffic {
        let port = crate::free_port();
        let mesh = format!(
            "kind: Cluster\nmetadata: {{name: {CLUSTER}}}\nspec: {{region: us-east-1}}\n---\n\
             kind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{protocol: http, port: {port}}}\n"
        );
        let applied = crate::cli(&control_planes[0], &["apply", "-f", "-"], Some(&mesh));
        assert!(applied.ok, "{}", applied.stderr);

        let mut started = Vec::new();
        for i in 0..upstreams {
            started.push(Upstream::start(&format!("upstream-{i}")).await);
        }
        let ports: Vec<u16> = started.iter().map(|u| u.port).collect();
        let source = root.join("east-endpoints.yaml");
        write_endpoints(&source, &ports);

        let links: Vec<Relay> = control_planes
            .iter()
            .enumerate()
            .map(|(i, addr)| Relay::start(addr, 0x11_7e5 + i as u64))
            .collect();
        let addrs: Vec<&str> = links.iter().map(|l| l.addr.as_str()).collect();
        let mut agent = AgentProcess::new(
            root,
            "east-agent",
            CLUSTER,
            &addrs,
            &format!("file:{}", source.display()),
            &[],
        );
        agent.start();
        let mut proxy = ProxyProcess::new(root, "east-proxy", CLUSTER, &addrs);
        proxy.start();
        let proxy_addr = format!("127.0.0.1:{port}");
        proxy::wait_routed(&proxy_addr).await;

        MeshTraffic {
            proxy_addr,
            upstreams: started,
            links,
            source,
            driven: None,
            _agent: agent,
            _proxy: proxy,
        }
    }

    /// Until `stop`: sends requests through the proxy, and rewrites the
    /// agent's file with a random non-empty subset of the upstreams every
    /// 0.3–1 s.
    pub fn drive(&mut self, seed: u64, stop: Instant) {
        let ports: Vec<u16> = self.upstreams.iter().map(|u| u.port).collect();
        let traffic = tokio::spawn(send_until(self.proxy_addr.clone(), stop));
        let churn = tokio::spawn(churn_until(self.source.clone(), ports, seed, stop));
        self.driven = Some(Driven { traffic, churn });
    }

    /// Waits for the deadline given to [`MeshTraffic::drive`]: what the
    /// client saw, how many times the endpoint file changed, and the ports
    /// it names last (sorted).
    pub async fn finish(&mut self) -> (Requests, usize, Vec<u16>) {
        let driven = self.driven.take().expect("driven");
        let requests = driven.traffic.await.expect("the traffic task");
        let (changes, last) = driven.churn.await.expect("the churn task");
        (requests, changes, last)
    }

    /// The names of the upstreams on `ports`.
    pub fn names_of(&self, ports: &[u16]) -> Vec<String> {
        self.upstreams
            .iter()
            .filter(|u| ports.contains(&u.port))
            .map(|u| u.name.clone())
            .collect()
    }
}

struct Driven {
    traffic: JoinHandle<Requests>,
    /// How many times the file changed, and the ports it names last.
    churn: JoinHandle<(usize, Vec<u16>)>,
}

/// The agent's file source: web.shop's endpoints on these ports.
fn write_endpoints(path: &Path, ports: &[u16]) {
    write_endpoint_file(path, &local_web_endpoints(ports));
}

async fn send_until(addr: String, stop: Instant) -> Requests {
    let client = proxy::client();
    let mut requests = Requests::default();
    while Instant::now() < stop {
        let outcome = proxy::get(&client, &addr, "web.shop", "/").await;
        requests.sent += 1;
        let failure = match outcome {
            Some((200, _)) => None,
            Some((status, body)) => Some(format!("HTTP {status}: {body}")),
            None => Some("no response".to_string()),
        };
        if let Some(failure) = failure {
            requests.failed += 1;
            if requests.failures.len() < 5 {
                requests.failures.push(failure);
            }
        }
        // About a hundred a second: load, without starving the nodes of the
        // machine's cores.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    requests
}

async fn churn_until(
    source: PathBuf,
    ports: Vec<u16>,
    seed: u64,
    stop: Instant,
) -> (usize, Vec<u16>) {
    let mut rng = Rng(seed ^ 0x005e_ed0f_e4d0);
    let mut last = ports.clone();
    let mut changes = 0;
    // The last change lands well before the deadline, so the run's end
    // checks what every node and the proxy settled on.
    while Instant::now() + Duration::from_secs(2) < stop {
        tokio::time::sleep(rng.millis(300, 1_000)).await;
        // A random non-empty subset: bit i keeps upstream i.
        let mask = 1 + rng.below((1u64 << ports.len()) - 1);
        let chosen: Vec<u16> = ports
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, p)| *p)
            .collect();
        write_endpoints(&source, &chosen);
        last = chosen;
        changes += 1;
    }
    last.sort_unstable();
    (changes, last)
}
