//! Raft writes against etcd (run on purpose, not by CI; `scripts/bench-raft`
//! builds and runs it): a three-node Meridian cluster and a three-node etcd
//! cluster on loopback, both with fsync, in the same run on the same cores.
//! For each, with 1 and with 64 concurrent clients (each its own gRPC
//! connection to the leader): writes of distinct keys with values of about
//! 90 bytes, then linearizable reads of them; prints writes or reads per
//! second and the p50/p99 latency.
//!
//! `meridian-raft-bench [--seconds S] [--clients 1,64] [--etcd PATH] [--meridian-only]`
//! (uses the `meridian` binary beside it; MERIDIAN_BIN_DIR points elsewhere;
//! etcd from PATH unless `--etcd` says where).

use meridian_proto::v1::{
    admin_client::AdminClient, Consistency, GetRequest, PutRequest, ResourceKey,
};
use meridian_tests::{agreed_leader, free_port, percentile, start_cluster, ServerOptions};
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};
use tonic::transport::Channel;

/// About 90 bytes of value, as in the issue's measurement.
const VALUE: &str =
    "a-value-of-about-ninety-bytes-for-every-write-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

struct Settings {
    seconds: u64,
    clients: Vec<usize>,
    etcd: String,
    /// `--meridian-only`: skip etcd (to profile Meridian alone).
    meridian_only: bool,
}

fn settings() -> Settings {
    let mut settings = Settings {
        seconds: 10,
        clients: vec![1, 64],
        etcd: "etcd".into(),
        meridian_only: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        if flag == "--meridian-only" {
            settings.meridian_only = true;
            continue;
        }
        let value = args.next().cloned().unwrap_or_default();
        match flag.as_str() {
            "--seconds" => settings.seconds = value.parse().expect("--seconds N"),
            "--clients" => {
                settings.clients = value
                    .split(',')
                    .map(|c| c.parse().expect("--clients 1,64"))
                    .collect()
            }
            "--etcd" => settings.etcd = value,
            other => panic!("unknown flag {other}"),
        }
    }
    settings
}

/// What one run measured.
struct Figures {
    operations: usize,
    elapsed: Duration,
    /// Sorted.
    latencies: Vec<Duration>,
    errors: usize,
}

impl Figures {
    fn line(&self, system: &str, what: &str, clients: usize) -> String {
        let rate = self.operations as f64 / self.elapsed.as_secs_f64();
        format!(
            "| {system} | {what} | {clients} | {rate:.0} | {:.2} | {:.2} | {} |",
            millis(percentile(&self.latencies, 0.50)),
            millis(percentile(&self.latencies, 0.99)),
            self.errors
        )
    }

    fn rate(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64()
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The two systems' operations, as one client sees them.
enum Client {
    Meridian(AdminClient<Channel>),
    Etcd(tonic::client::Grpc<Channel>),
}

impl Client {
    async fn write(&mut self, key: &str) -> bool {
        match self {
            Client::Meridian(admin) => {
                // A Cluster whose region holds the value: about as many
                // bytes of payload as etcd's value.
                let manifest = format!(
                    r#"{{"kind":"Cluster","metadata":{{"name":"{key}"}},"spec":{{"region":"r{}"}}}}"#,
                    "a".repeat(47)
                );
                admin
                    .put(PutRequest {
                        manifest_json: manifest,
                        expected_revision: None,
                    })
                    .await
                    .is_ok()
            }
            Client::Etcd(grpc) => {
                let request = etcd::PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: VALUE.as_bytes().to_vec(),
                };
                etcd::unary::<_, etcd::PutResponse>(grpc, "/etcdserverpb.KV/Put", request)
                    .await
                    .is_ok()
            }
        }
    }

    async fn read(&mut self, key: &str) -> bool {
        match self {
            Client::Meridian(admin) => admin
                .get(GetRequest {
                    key: Some(ResourceKey {
                        kind: "Cluster".into(),
                        name: key.to_string(),
                        ..Default::default()
                    }),
                    consistency: Consistency::Linearizable as i32,
                })
                .await
                .is_ok(),
            Client::Etcd(grpc) => {
                let request = etcd::RangeRequest {
                    key: key.as_bytes().to_vec(),
                };
                etcd::unary::<_, etcd::RangeResponse>(grpc, "/etcdserverpb.KV/Range", request)
                    .await
                    .is_ok_and(|r| !r.kvs.is_empty())
            }
        }
    }
}

/// Where the clients connect: a leader's gRPC address.
enum Target {
    Meridian(String),
    Etcd(String),
}

impl Target {
    async fn connect(&self) -> Client {
        match self {
            Target::Meridian(addr) => Client::Meridian(AdminClient::new(channel(addr).await)),
            Target::Etcd(addr) => Client::Etcd(tonic::client::Grpc::new(channel(addr).await)),
        }
    }
}

/// `clients` clients, each on its own connection, writing distinct keys
/// (or reading the `written` ones) for `seconds`.
async fn run(target: &Target, clients: usize, seconds: u64, read: bool, written: usize) -> Figures {
    let started = Instant::now();
    let stop = started + Duration::from_secs(seconds);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let mut client = target.connect().await;
        let next = next.clone();
        tasks.spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0);
            while Instant::now() < stop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Reads go over the keys written, round and round.
                let key = format!("bench-{}", if read { n % written.max(1) } else { n });
                let begun = Instant::now();
                let ok = if read {
                    client.read(&key).await
                } else {
                    client.write(&key).await
                };
                if ok {
                    latencies.push(begun.elapsed());
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        });
    }
    let mut figures = Figures {
        operations: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        errors: 0,
    };
    while let Some(done) = tasks.join_next().await {
        let (latencies, errors) = done.expect("client task");
        figures.operations += latencies.len();
        figures.latencies.extend(latencies);
        figures.errors += errors;
    }
    figures.elapsed = started.elapsed();
    figures.latencies.sort_unstable();
    figures
}

async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("address")
        .connect()
        .await
        .expect("connect")
}

/// A three-node etcd cluster on loopback, killed on drop.
struct Etcd {
    children: Vec<Child>,
    clients: Vec<String>,
}

impl Etcd {
    fn start(binary: &str, root: &Path) -> Etcd {
        let nodes: Vec<(String, u16, u16)> = (1..=3)
            .map(|i| (format!("etcd-{i}"), free_port(), free_port()))
            .collect();
        let initial: Vec<String> = nodes
            .iter()
            .map(|(name, _, peer)| format!("{name}=http://127.0.0.1:{peer}"))
            .collect();
        let children = nodes
            .iter()
            .map(|(name, client, peer)| {
                Command::new(binary)
                    .args([
                        "--name",
                        name,
                        "--data-dir",
                        &root.join(name).display().to_string(),
                        "--listen-client-urls",
                        &format!("http://127.0.0.1:{client}"),
                        "--advertise-client-urls",
                        &format!("http://127.0.0.1:{client}"),
                        "--listen-peer-urls",
                        &format!("http://127.0.0.1:{peer}"),
                        "--initial-advertise-peer-urls",
                        &format!("http://127.0.0.1:{peer}"),
                        "--initial-cluster",
                        &initial.join(","),
                        "--initial-cluster-state",
                        "new",
                        "--log-level",
                        "error",
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| {
                        panic!("starting {binary}: {e} (apt-get install etcd-server)")
                    })
            })
            .collect();
        Etcd {
            children,
            clients: nodes
                .iter()
                .map(|(_, client, _)| format!("127.0.0.1:{client}"))
                .collect(),
        }
    }

    /// The client address of the node that leads, once there is one.
    async fn leader(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            for addr in &self.clients {
                let Ok(channel) = Channel::from_shared(format!("http://{addr}"))
                    .expect("address")
                    .connect()
                    .await
                else {
                    continue;
                };
                let mut grpc = tonic::client::Grpc::new(channel);
                let status = etcd::unary::<_, etcd::StatusResponse>(
                    &mut grpc,
                    "/etcdserverpb.Maintenance/Status",
                    etcd::StatusRequest {},
                )
                .await;
                if let Ok(status) = status {
                    if status.leader != 0
                        && status.leader == status.header.map_or(0, |h| h.member_id)
                    {
                        return addr.clone();
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("etcd elected no leader in 30 s")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The few etcd v3 messages the benchmark sends, by their field numbers in
/// etcd's `rpc.proto`; fields it does not read are skipped on decoding.
mod etcd {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutResponse {}

    /// A linearizable read of one key (`serializable`, field 7, left false).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RangeRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RangeResponse {
        #[prost(message, repeated, tag = "2")]
        pub kvs: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusRequest {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(uint64, tag = "4")]
        pub leader: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseHeader {
        #[prost(uint64, tag = "2")]
        pub member_id: u64,
    }

    pub async fn unary<Req, Resp>(
        grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
        path: &'static str,
        request: Req,
    ) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
        grpc.unary(tonic::Request::new(request), path, codec)
            .await
            .map(tonic::Response::into_inner)
    }
}

#[tokio::main]
async fn main() {
    let settings = settings();
    let root = tempfile::tempdir().expect("temp dir");
    println!(
        "three nodes each on loopback, fsync on; {} s per row; values of {} bytes",
        settings.seconds,
        VALUE.len()
    );
    println!("| system | operation | clients | per second | p50 ms | p99 ms | errors |");
    println!("|---|---|---|---|---|---|---|");

    let mut etcd_rates = Vec::new();
    if !settings.meridian_only {
        let etcd = Etcd::start(&settings.etcd, root.path());
        let etcd_target = Target::Etcd(etcd.leader().await);
        for &clients in &settings.clients {
            let writes = run(&etcd_target, clients, settings.seconds, false, 0).await;
            println!("{}", writes.line("etcd", "write", clients));
            let reads = run(
                &etcd_target,
                clients,
                settings.seconds,
                true,
                writes.operations,
            )
            .await;
            println!("{}", reads.line("etcd", "linearizable read", clients));
            etcd_rates.push((writes.rate(), reads.rate()));
        }
    }

    let meridian_root = root.path().join("meridian");
    std::fs::create_dir_all(&meridian_root).expect("meridian's dir");
    let nodes = start_cluster(&meridian_root, 3, ServerOptions::default());
    let leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let meridian_target = Target::Meridian(
        nodes
            .iter()
            .find(|n| n.id == leader)
            .expect("leader")
            .grpc
            .clone(),
    );
    for (i, &clients) in settings.clients.iter().enumerate() {
        let writes = run(&meridian_target, clients, settings.seconds, false, 0).await;
        println!("{}", writes.line("Meridian", "write", clients));
        let reads = run(
            &meridian_target,
            clients,
            settings.seconds,
            true,
            writes.operations,
        )
        .await;
        println!("{}", reads.line("Meridian", "linearizable read", clients));
        let Some((etcd_writes, etcd_reads)) = etcd_rates.get(i) else {
            continue;
        };
        println!(
            "| ratio | Meridian / etcd, {clients} clients | | writes {:.2}×, reads {:.2}× | | | |",
            writes.rate() / etcd_writes,
            reads.rate() / etcd_reads
        );
    }
}
