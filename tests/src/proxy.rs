//! One `meridian-proxy` process, killed on drop, and an HTTP client to send
//! requests through it.

use crate::process::Process;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use std::path::Path;

pub struct ProxyProcess {
    pub admin: String,
    process: Process,
}

impl ProxyProcess {
    pub fn new(root: &Path, node_id: &str, cluster: &str, xds: &[&str]) -> Self {
        let admin = format!("127.0.0.1:{}", crate::free_port());
        let state_dir = root.join(format!("{node_id}-state")).display().to_string();
        let args = [
            "--insecure",
            "--xds",
            &xds.join(","),
            "--node-id",
            node_id,
            "--cluster",
            cluster,
            "--admin-addr",
            &admin,
            "--state-dir",
            &state_dir,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let log = root.join(format!("{node_id}.log"));
        ProxyProcess {
            admin,
            process: Process::new("meridian-proxy", args, log, "info,meridian_proxy=debug"),
        }
    }

    /// More flags for the proxy (before it starts).
    pub fn with_args(mut self, args: &[&str]) -> Self {
        self.process.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Mutual TLS to the control plane instead of `--insecure`: the proxy's
    /// `--cert`, `--key`, `--trust-bundle` (and `--token`) flags.
    pub fn secure(mut self, tls_args: &[&str]) -> Self {
        self.process.args.retain(|a| a != "--insecure");
        self.with_args(tls_args)
    }

    pub fn start(&mut self) {
        self.process.start();
    }

    /// Sends SIGTERM (graceful drain).
    pub fn terminate(&self) {
        self.process.terminate();
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        self.process.exited()
    }

    pub fn kill(&mut self) {
        self.process.kill();
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }
}

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// GET `http://ADDR/PATH` with the given Host header: (status, body).
pub async fn get(client: &HttpClient, addr: &str, host: &str, path: &str) -> Option<(u16, String)> {
    let request = hyper::Request::get(format!("http://{addr}{path}"))
        .header(hyper::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .ok()?;
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(10), client.request(request))
            .await
            .ok()?
            .ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// How long the proxy tests wait for a condition.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// An `Endpoints` manifest for web.shop in `cluster`: each (port on
/// 127.0.0.1, weight, health) in `zone`.
pub fn endpoints(cluster: &str, zone: &str, eps: &[(u16, u32, &str)]) -> String {
    let items: Vec<String> = eps
        .iter()
        .map(|(port, weight, health)| format!("{{address: 127.0.0.1, port: {port}, weight: {weight}, zone: {zone}, health: {health}}}"))
        .collect();
    format!("kind: Endpoints\nmetadata: {{name: web, namespace: shop, cluster: {cluster}}}\nspec: {{endpoints: [{}]}}\n", items.join(", "))
}

/// Cluster east and web.shop on `port`, served by one healthy endpoint on
/// 127.0.0.1:`upstream_port`.
pub fn one_endpoint_mesh(port: u16, upstream_port: u16) -> String {
    format!(
        "kind: Cluster\nmetadata: {{name: east}}\nspec: {{region: us-east-1}}\n---\n\
         kind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{protocol: http, port: {port}}}\n---\n{}",
        endpoints("east", "us-east-1a", &[(upstream_port, 1, "healthy")]),
    )
}

/// A one-node control plane, with a leader.
pub async fn control_plane(root: &Path) -> Vec<crate::ServerNode> {
    let nodes = crate::start_cluster(root, 1, crate::ServerOptions::default());
    crate::agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    nodes
}

/// Applies `mesh`, starts a proxy in cluster east, and waits until it routes
/// web.shop on `port`; returns the proxy and its address.
pub async fn routed_proxy(
    root: &Path,
    cp: &str,
    name: &str,
    mesh: &str,
    port: u16,
) -> (ProxyProcess, String) {
    routed_proxy_with(root, cp, name, mesh, port, &[]).await
}

/// [`routed_proxy`], with more flags for the proxy.
pub async fn routed_proxy_with(
    root: &Path,
    cp: &str,
    name: &str,
    mesh: &str,
    port: u16,
    args: &[&str],
) -> (ProxyProcess, String) {
    let applied = crate::cli(cp, &["apply", "-f", "-"], Some(mesh));
    assert!(applied.ok, "{}", applied.stderr);
    let mut proxy = ProxyProcess::new(root, name, "east", &[cp]).with_args(args);
    proxy.start();
    let addr = format!("127.0.0.1:{port}");
    wait_routed(&addr).await;
    (proxy, addr)
}

/// A one-node control plane, one upstream answering "up", and a proxy
/// routing web.shop to it; everything stops when this drops.
pub struct OneEndpoint {
    pub proxy: ProxyProcess,
    /// The proxy's listener for web.shop.
    pub addr: String,
    pub upstream: crate::upstream::Upstream,
    _nodes: Vec<crate::ServerNode>,
    _root: tempfile::TempDir,
}

impl OneEndpoint {
    /// Started with more flags for the proxy; returns once it routes.
    pub async fn start(name: &str, proxy_args: &[&str]) -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let nodes = control_plane(root.path()).await;
        let upstream = crate::upstream::Upstream::start("up").await;
        let port = crate::free_port();
        let mesh = one_endpoint_mesh(port, upstream.port);
        let (proxy, addr) =
            routed_proxy_with(root.path(), &nodes[0].grpc, name, &mesh, port, proxy_args).await;
        OneEndpoint {
            proxy,
            addr,
            upstream,
            _nodes: nodes,
            _root: root,
        }
    }
}

/// Waits until the proxy at `addr` routes web.shop.
pub async fn wait_routed(addr: &str) {
    crate::eventually(WAIT, "the proxy to route web.shop", || async {
        let (status, _) = crate::http::get_host(addr, "web.shop", "/").await?;
        (status == 200).then_some(())
    })
    .await;
}

/// Sends `count` sequential GETs to web.shop: how many each upstream
/// answered, and `HTTP CODE: BODY` for each other answer.
pub async fn spread(
    client: &HttpClient,
    addr: &str,
    count: usize,
) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for _ in 0..count {
        let (status, body) = get(client, addr, "web.shop", "/")
            .await
            .expect("a response");
        let key = if status == 200 {
            body
        } else {
            format!("HTTP {status}: {body}")
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}
