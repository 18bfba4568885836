//! xDS benchmark (run on purpose, not by CI): a mesh of 10,000 endpoints,
//! 1,000 concurrent ADS clients (half delta, half state of the world) on one
//! control-plane node and on three. Prints, per setup, over 20 changes of
//! one service's endpoints: time from each change until every client holds
//! it (p50, p99), the CPU time the nodes spent per change, resource bytes
//! sent per change, and each node's RSS; then the RSS that half as many
//! clients more add per stream (the cost of one more idle stream, its
//! locality's routes already compiled); then the compile times for 100,000
//! endpoints.
//!
//! `meridian-xds-bench [CLIENTS] [ENDPOINTS] [--tls] [--same-process] [--light] [--nodes N]`
//! (uses the `meridian` binary beside it; MERIDIAN_BIN_DIR points elsewhere).
//! The clients run in a process of their own, pinned to other cores than
//! the control plane's where the machine has two or more; `--same-process`
//! runs them in this one, as `--tls` does (the control plane and every
//! client then speak mutual TLS, each client with its own proxy
//! certificate). `--light` clients keep load assignments by name and
//! version only (for 10,000 clients of 100,000 endpoints).
//! `MERIDIAN_XDS_BENCH_HOLD_SECONDS=N` keeps every node and stream up for N
//! seconds after the changes, for a profiler (heaptrack, perf) to look.

use meridian_identity::{
    ca,
    spiffe::{Identity, SpiffeId},
    tls::{control_plane_node, Credentials, Dialer},
};
use meridian_model::{parse_manifests, Resource};
use meridian_proto::v1::{ApplyRequest, PutRequest};
use meridian_routes::{Compiler, MeshState, ProxyLocality};
use meridian_tests::{
    agreed_leader, cpu_time,
    node::start_cluster_with,
    percentile,
    pki::{dialer, tls_args, Pki, TRUST_DOMAIN},
    rss_kib,
    xds::ENDPOINT,
    ServerNode, ServerOptions,
};
use std::time::{Duration, Instant, SystemTime};

mod clients;
use clients::{ClientSet, Remote};

const CLUSTERS: usize = 10;
const SERVICES: usize = 100;
const CHANGES: usize = 20;

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

/// Where the clients run.
enum Clients {
    /// In this process, on the same cores as the control plane (`--same-process`, `--tls`).
    Here(ClientSet),
    /// In a process of their own, pinned to other cores where there are any.
    Apart(Remote),
}

/// The cores the control plane and the client process get: split when the
/// machine has two or more (taskset lists), else shared.
fn cores() -> Option<(String, String)> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (n >= 2).then(|| ("0".to_string(), format!("1-{}", n - 1)))
}

struct Setup {
    nodes: u64,
    clients: usize,
    endpoints: usize,
    tls: bool,
    apart: bool,
    light: bool,
    /// The cores of the client process (taskset's list), when apart.
    client_cpus: Option<String>,
}

async fn run(setup: &Setup) {
    let root = tempfile::tempdir().expect("temp dir");
    let pki = setup.tls.then(|| Pki::new(root.path(), "ca"));
    let nodes = start_cluster_with(root.path(), setup.nodes, |id| match &pki {
        None => ServerOptions::default(),
        Some(pki) => ServerOptions {
            global_args: tls_args(&pki.issue(&format!("node-{id}"), &["--node", &id.to_string()])),
            dialer: dialer(&pki.issue(&format!("admin-{id}"), &["--admin", "bench"])),
            ..ServerOptions::default()
        },
    });
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let per_set = (setup.endpoints / (SERVICES * CLUSTERS)).max(1);
    let mut manifests = clusters();
    manifests.extend((0..SERVICES).map(service));
    manifests.extend(
        (0..SERVICES).flat_map(|s| (0..CLUSTERS).map(move |c| endpoints(s, c, per_set, 0))),
    );
    load(&nodes[0], manifests).await;
    let rss_before: u64 = rss_kib_of(&nodes).iter().sum();

    let servers: Vec<String> = nodes.iter().map(|n| n.grpc.clone()).collect();
    let dial = |_: usize, name: &str, cluster: &str| match &pki {
        None => Dialer::insecure(),
        Some(pki) => proxy_dialer(pki, cluster, name),
    };
    // Clients numbered from `first`, each holding the full view.
    let (servers, dial) = (&servers, &dial);
    let connect = |first: usize, count: usize| async move {
        if setup.apart {
            let cpus = setup.client_cpus.as_deref();
            Clients::Apart(Remote::start(servers, (first, count), setup.light, cpus))
        } else {
            let set =
                ClientSet::connect(servers, (first, count), CLUSTERS, setup.light, dial).await;
            set.wait_full_view(SERVICES).await;
            Clients::Here(set)
        }
    };
    let started = Instant::now();
    let mut clients = connect(0, setup.clients).await;
    let first_view = match &clients {
        Clients::Here(_) => started.elapsed(),
        Clients::Apart(remote) => remote.first_view,
    };

    let mut latencies = Vec::new();
    let mut bytes = 0;
    let cpu_before = cpu_time_of(&nodes);
    for change in 1..=CHANGES {
        match &mut clients {
            Clients::Here(set) => set.mark(),
            Clients::Apart(remote) => remote.mark(),
        }
        let t0 = SystemTime::now();
        load(
            &nodes[change % nodes.len()],
            vec![endpoints(0, 0, per_set, change)],
        )
        .await;
        let (these, sent) = match &mut clients {
            Clients::Here(set) => set.wait_change(t0).await,
            Clients::Apart(remote) => remote.wait_change(t0),
        };
        latencies.extend(these);
        bytes += sent;
    }
    let cpu_per_change = (cpu_time_of(&nodes) - cpu_before) / CHANGES as u32;
    latencies.sort();
    if let Some(hold) = std::env::var("MERIDIAN_XDS_BENCH_HOLD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        // Every stream still open, for a profiler to look at the nodes.
        println!(
            "holding for {hold} s: node pids {:?}",
            nodes.iter().filter_map(|n| n.pid()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_secs(hold)).await;
    }
    let rss = rss_kib_of(&nodes);
    // What the streams added: their state, buffers and connections, and
    // the routes compiled for their localities.
    let per_stream_kib =
        rss.iter().sum::<u64>().saturating_sub(rss_before) / setup.clients.max(1) as u64;
    // Then half as many clients more, in the localities already served:
    // what each further stream costs, idle once it holds the full view.
    let more = (setup.clients / 2).max(1);
    let _more_clients = connect(setup.clients, more).await;
    let each_more_kib = rss_kib_of(&nodes)
        .iter()
        .sum::<u64>()
        .saturating_sub(rss.iter().sum())
        / more as u64;
    println!(
        "| {} | {} | {} | {} | {} | {:.1} s | {:.1} ms | {:.1} ms | {:.1} ms | {} ms | {} KiB | {} MiB | {} KiB | {} KiB |",
        if setup.tls { "mTLS" } else { "plaintext" },
        if setup.apart { "apart" } else { "same" },
        setup.nodes,
        setup.clients,
        per_set * SERVICES * CLUSTERS,
        first_view.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        cpu_per_change.as_millis(),
        bytes / CHANGES as u64 / 1024,
        rss.iter()
            .map(|kib| (kib / 1024).to_string())
            .collect::<Vec<_>>()
            .join(", "),
        per_stream_kib,
        each_more_kib,
    );
}

/// The CPU time every node has used.
fn cpu_time_of(nodes: &[ServerNode]) -> Duration {
    nodes.iter().filter_map(|n| n.pid()).map(cpu_time).sum()
}

/// Each node's RSS.
fn rss_kib_of(nodes: &[ServerNode]) -> Vec<u64> {
    nodes.iter().filter_map(|n| n.pid()).map(rss_kib).collect()
}

/// One proxy locality's compile of a mesh of `endpoint_count` endpoints
/// (1,000 services × 10 clusters, each service with a failover policy when
/// `policies`): from nothing, and again after one service's endpoints
/// changed, with the compiler's cache of the first.
fn compile_times(endpoint_count: usize, policies: bool) -> (Duration, Duration) {
    let services = 1_000;
    let per_set = endpoint_count / (services * CLUSTERS);
    let mut text: Vec<String> = clusters();
    text.extend((0..services).map(service));
    if policies {
        text.extend((0..services).map(|s| {
            format!(
                r#"{{"kind":"FailoverPolicy","metadata":{{"name":"s{s}","namespace":"bench"}},"spec":{{"service":"s{s}","order":["c1","c2"]}}}}"#
            )
        }));
    }
    text.extend(
        (0..services).flat_map(|s| (0..CLUSTERS).map(move |c| endpoints(s, c, per_set, 0))),
    );
    let resources: Vec<Resource> =
        parse_manifests(&format!("{{\"items\": [{}]}}", text.join(","))).expect("valid");
    let mut state = MeshState::from_resources(resources);
    let proxy = ProxyLocality {
        cluster: "c0".into(),
        ..Default::default()
    };
    let mut compiler = Compiler::default();
    let t0 = Instant::now();
    let compiled = compiler.compile(&state, &proxy);
    let full = t0.elapsed();
    assert!(compiled
        .of_type(ENDPOINT)
        .is_some_and(|m| m.len() == services));
    let mut changed = parse_manifests(&endpoints(0, 0, per_set, 1)).expect("valid");
    for resource in &mut changed {
        resource.metadata.revision = Some(2);
    }
    for resource in changed {
        state.put(resource);
    }
    let t1 = Instant::now();
    let again = compiler.compile(&state, &proxy);
    let incremental = t1.elapsed();
    assert_ne!(again, compiled, "the change shows in the output");
    (full, incremental)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let light = args.iter().any(|a| a == "--light");
    if args.first().map(String::as_str) == Some("--clients") {
        // The client process (see clients.rs).
        let servers = args[1].split(',').map(str::to_string).collect();
        let count = args[2].parse().expect("COUNT");
        let first = args[3].parse().expect("FIRST");
        clients::serve_parent(servers, (first, count), CLUSTERS, SERVICES, light).await;
        return;
    }
    let tls = args.iter().any(|a| a == "--tls");
    // Over mTLS each client needs a certificate from this process's CA.
    let apart = !tls && !args.iter().any(|a| a == "--same-process");
    let mut numbers = args
        .iter()
        .enumerate()
        .filter(|(i, _)| *i == 0 || args[i - 1] != "--nodes")
        .filter_map(|(_, a)| a.parse::<usize>().ok());
    let clients = numbers.next().unwrap_or(1_000);
    let endpoints = numbers.next().unwrap_or(10_000);
    let node_counts: Vec<u64> = match args.iter().position(|a| a == "--nodes") {
        Some(i) => vec![args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .expect("--nodes N")],
        None => vec![1, 3],
    };
    // Read before this process is pinned: afterwards it sees one core.
    let cores = cores();
    if let (true, Some((control_plane, _))) = (apart, &cores) {
        // This process and the nodes it starts on their own cores; the
        // client process gets the others.
        let _ = std::process::Command::new("taskset")
            .args([
                "-a",
                "-p",
                "-c",
                control_plane,
                &std::process::id().to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .status();
    }
    println!("| transport | clients | nodes | streams | endpoints | full view | change→ACK p50 | p99 | max | node CPU per change | bytes/change | RSS per node | RSS added per stream | each stream more |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for nodes in node_counts {
        let setup = Setup {
            nodes,
            clients,
            endpoints,
            tls,
            apart,
            light,
            client_cpus: cores.as_ref().map(|(_, clients)| clients.clone()),
        };
        run(&setup).await;
    }
    println!();
    for policies in [false, true] {
        let (full, incremental) = compile_times(100_000, policies);
        println!(
            "100,000 endpoints (1,000 services x 10 clusters{}), one proxy locality: full compile {:.0} ms, after one service's endpoints changed {:.1} ms",
            if policies { ", a failover policy each" } else { "" },
            full.as_secs_f64() * 1e3,
            incremental.as_secs_f64() * 1e3
        );
    }
}
