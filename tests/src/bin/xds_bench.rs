//! xDS benchmark (run on purpose, not by CI): a mesh of 10,000 endpoints,
//! 1,000 concurrent ADS clients (half delta, half state of the world) on one
//! control-plane node and on three. Prints, per setup: time from one endpoint
//! change until every client holds it (p50, p99), resource bytes sent per
//! change, and each node's RSS; then the full compile time for 100,000
//! endpoints.
//!
//! `cargo run -p meridian-tests --bin meridian-xds-bench -- [CLIENTS] [ENDPOINTS] [--tls]`
//! (uses the `meridian` binary beside it; MERIDIAN_BIN_DIR points elsewhere).
//! With `--tls`, the control plane and every client speak mutual TLS, each
//! client with its own proxy certificate.

use meridian_identity::{
    ca,
    spiffe::{Identity, SpiffeId},
    tls::{control_plane_node, Credentials, Dialer},
};
use meridian_model::{parse_manifests, Resource};
use meridian_proto::v1::{ApplyRequest, PutRequest};
use meridian_routes::{compile, MeshState, ProxyLocality};
use meridian_tests::{
    agreed_leader,
    node::start_cluster_with,
    percentile,
    pki::{dialer, tls_args, Pki, TRUST_DOMAIN},
    rss_kib,
    xds::{self, AdsClient, ENDPOINT},
    ServerNode, ServerOptions,
};
use std::time::{Duration, Instant};

const CLUSTERS: usize = 10;
const SERVICES: usize = 100;
const CHANGES: usize = 5;

fn clusters() -> Vec<String> {
    (0..CLUSTERS)
        .map(|c| {
            format!(
                r#"{{"kind":"Cluster","metadata":{{"name":"c{c}"}},"spec":{{"region":"r{}","zone":"z{c}"}}}}"#,
                c % 3
            )
        })
        .collect()
}

fn service(s: usize) -> String {
    format!(
        r#"{{"kind":"Service","metadata":{{"name":"s{s}","namespace":"bench"}},"spec":{{"protocol":"grpc","port":{}}}}}"#,
        9000 + s % 50
    )
}

/// One service's endpoints in one cluster; `extra` adds endpoints (for changes).
fn endpoints(s: usize, c: usize, per_set: usize, extra: usize) -> String {
    let eps: Vec<String> = (0..per_set + extra)
        .map(|i| {
            format!(
                r#"{{"address":"10.{c}.{}.{}","port":{}}}"#,
                s % 250,
                i % 250,
                8000 + i / 250
            )
        })
        .collect();
    format!(
        r#"{{"kind":"Endpoints","metadata":{{"name":"s{s}","namespace":"bench","cluster":"c{c}"}},"spec":{{"endpoints":[{}]}}}}"#,
        eps.join(",")
    )
}

async fn load(node: &ServerNode, manifests: Vec<String>) {
    let mut client = node.client().await.expect("admin client");
    for chunk in manifests.chunks(200) {
        let puts = chunk
            .iter()
            .map(|m| PutRequest {
                manifest_json: m.clone(),
                expected_revision: None,
            })
            .collect();
        client
            .apply(ApplyRequest {
                puts,
                deletes: vec![],
            })
            .await
            .expect("apply");
    }
}

/// A dialer presenting a fresh certificate for proxy `id` of `cluster`.
fn proxy_dialer(pki: &Pki, cluster: &str, id: &str) -> Dialer {
    let ca = pki.files().read().expect("CA files");
    let identity = Identity::Proxy {
        cluster: cluster.into(),
        id: id.into(),
    };
    let spiffe = SpiffeId::new(TRUST_DOMAIN, identity).expect("id");
    let issued = ca::issue(&ca.signer(), &spiffe, &[], Duration::from_secs(3600)).expect("issue");
    let credentials =
        Credentials::from_pem(&ca.cert, Some((&issued.cert_pem, &issued.key_pem))).expect("creds");
    Dialer::tls(&credentials, control_plane_node).expect("dialer")
}

async fn run(node_count: u64, client_count: usize, endpoint_count: usize, tls: bool) {
    let root = tempfile::tempdir().expect("temp dir");
    let pki = tls.then(|| Pki::new(root.path(), "ca"));
    let nodes = start_cluster_with(root.path(), node_count, |id| match &pki {
        None => ServerOptions::default(),
        Some(pki) => ServerOptions {
            global_args: tls_args(&pki.issue(&format!("node-{id}"), &["--node", &id.to_string()])),
            dialer: dialer(&pki.issue(&format!("admin-{id}"), &["--admin", "bench"])),
            ..ServerOptions::default()
        },
    });
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let per_set = (endpoint_count / (SERVICES * CLUSTERS)).max(1);
    let mut manifests = clusters();
    manifests.extend((0..SERVICES).map(service));
    manifests.extend(
        (0..SERVICES).flat_map(|s| (0..CLUSTERS).map(move |c| endpoints(s, c, per_set, 0))),
    );
    load(&nodes[0], manifests).await;

    let started = Instant::now();
    let mut clients: Vec<AdsClient> = Vec::with_capacity(client_count);
    for i in 0..client_count {
        let node = &nodes[i % nodes.len()];
        let (name, cluster) = (format!("bench-{i}"), format!("c{}", i % CLUSTERS));
        let id = xds::node(&name, &cluster);
        let channel = match &pki {
            None => Dialer::insecure(),
            Some(pki) => proxy_dialer(pki, &cluster, &name),
        }
        .connect(&node.grpc)
        .await
        .expect("connect");
        let client = if i % 2 == 0 {
            xds::delta_on(channel, id).await
        } else {
            xds::sotw_on(channel, id, None, false).await
        };
        clients.push(client);
    }
    let full = |c: &AdsClient| {
        c.with(|h| h.resources.get(ENDPOINT).map(|m| m.len()).unwrap_or(0) >= SERVICES)
    };
    while !clients.iter().all(full) {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "clients did not get the full view"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first_view = started.elapsed();

    let mut latencies = Vec::new();
    let mut bytes = 0;
    for change in 1..=CHANGES {
        let before: Vec<(usize, u64)> = clients
            .iter()
            .map(|c| c.with(|h| (h.responses.len(), h.bytes)))
            .collect();
        let t0 = Instant::now();
        load(
            &nodes[change % nodes.len()],
            vec![endpoints(0, 0, per_set, change)],
        )
        .await;
        let mut done = vec![None; clients.len()];
        while done.iter().any(Option::is_none) {
            for (i, client) in clients.iter().enumerate() {
                if done[i].is_some() {
                    continue;
                }
                done[i] = client.with(|h| {
                    h.responses[before[i].0..]
                        .iter()
                        .zip(&h.received_at[before[i].0..])
                        .find(|((t, _), _)| t == ENDPOINT)
                        .map(|(_, at)| at.duration_since(t0))
                });
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "a change did not reach every client"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.extend(done.into_iter().flatten());
        tokio::time::sleep(Duration::from_millis(200)).await;
        bytes += clients
            .iter()
            .zip(&before)
            .map(|(c, (_, b))| c.with(|h| h.bytes) - b)
            .sum::<u64>();
    }
    latencies.sort();
    let rss: Vec<String> = nodes
        .iter()
        .filter_map(|n| n.pid())
        .map(|pid| format!("{} MiB", rss_kib(pid) / 1024))
        .collect();
    println!(
        "| {} | {node_count} | {client_count} | {} | {:.1} s | {:.1} ms | {:.1} ms | {} KiB | {} |",
        if tls { "mTLS" } else { "plaintext" },
        per_set * SERVICES * CLUSTERS,
        first_view.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        bytes / CHANGES as u64 / 1024,
        rss.join(", "),
    );
}

fn compile_time(endpoint_count: usize) -> Duration {
    let services = 1_000;
    let per_set = endpoint_count / (services * CLUSTERS);
    let mut text: Vec<String> = clusters();
    text.extend((0..services).map(service));
    text.extend(
        (0..services).flat_map(|s| (0..CLUSTERS).map(move |c| endpoints(s, c, per_set, 0))),
    );
    let resources: Vec<Resource> =
        parse_manifests(&format!("{{\"items\": [{}]}}", text.join(","))).expect("valid");
    let state = MeshState::from_resources(resources);
    let proxy = ProxyLocality {
        cluster: "c0".into(),
        ..Default::default()
    };
    let t0 = Instant::now();
    let compiled = compile(&state, &proxy);
    let elapsed = t0.elapsed();
    assert!(compiled
        .of_type(ENDPOINT)
        .is_some_and(|m| m.len() == services));
    elapsed
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tls = args.iter().any(|a| a == "--tls");
    let mut numbers = args.iter().filter_map(|a| a.parse::<usize>().ok());
    let clients = numbers.next().unwrap_or(1_000);
    let endpoint_count = numbers.next().unwrap_or(10_000);
    println!("| transport | nodes | clients | endpoints | full view | change→all ACK p50 | p99 | bytes/change | RSS |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for nodes in [1, 3] {
        run(nodes, clients, endpoint_count, tls).await;
    }
    let elapsed = compile_time(100_000);
    println!(
        "\nfull compile of 100,000 endpoints (1,000 services x 10 clusters), one proxy: {:.0} ms",
        elapsed.as_secs_f64() * 1e3
    );
}
