//! Harness for Meridian's end-to-end tests: start the real binaries on
//! 127.0.0.1 with ephemeral ports, talk to them over gRPC, HTTP and the CLI,
//! and kill every process when its handle drops.

pub mod agent;
pub mod fake_xds;
pub mod http;
pub mod http_sd;
pub mod kube_api;
pub mod linearizability;
pub mod mesh_traffic;
pub mod node;
pub mod otlp;
pub mod peer_links;
pub mod pki;
pub mod process;
pub mod proxy;
pub mod relay;
pub mod terraform;
pub mod upstream;
pub mod workload;
pub mod xds;

pub use node::{agreed_leader, start_cluster, ServerNode, ServerOptions};

use std::{
    path::PathBuf,
    process::{Command, Output},
    time::{Duration, Instant},
};

/// Where cargo put the workspace binaries: beside this test's `deps` folder.
pub fn binary(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("MERIDIAN_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let parent = exe.parent().expect("the executable sits in a folder");
    // Tests run from target/<profile>/deps, binaries from target/<profile>.
    let dir = if parent.ends_with("deps") {
        parent.parent().unwrap_or(parent)
    } else {
        parent
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, as scripts/test does)",
        path.display()
    );
    path
}

/// An unused TCP port on 127.0.0.1, for a server a test starts.
///
/// Taken below the kernel's ephemeral range: a port from that range (what
/// binding port 0 gives) can be taken by any outgoing connection's source
/// port between this check and the server binding it, and the server then
/// fails with "address in use". Each port is handed out once per process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let (low, high) = (10_000, ephemeral_low.max(12_000));
    // Test binaries run one after another; start each at its own place anyway.
    let _ = NEXT.compare_exchange(
        0,
        std::process::id() % (high - low),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..(high - low) {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % (high - low);
        let Ok(port) = u16::try_from(low + offset) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range ({low}..{high})")
}

/// The `p` quantile (0 to 1) of `sorted` latencies, nearest rank; zero
/// when there are none. For the benchmarks' figures.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The resident memory of process `pid` in KiB (0 if it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The fields of `/proc/PID/stat` from the third (the state) on: those
/// after the command, which may itself hold spaces and parentheses. None
/// when the process is gone.
pub fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_command = stat.rsplit(')').next()?;
    Some(
        after_command
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

/// CPU time a process has used (user and system, its ended threads
/// included), in clock ticks of 10 ms (Linux's `USER_HZ` of 100 on every
/// architecture Meridian builds for); zero once it is gone.
pub fn cpu_time(pid: u32) -> Duration {
    let ticks = proc_stat(pid)
        .and_then(|fields| {
            let (user, system): (u64, u64) =
                (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
            Some(user + system)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The result of one CLI invocation.
pub struct CliRun {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for CliRun {
    fn from(output: Output) -> Self {
        CliRun {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Runs `meridian --insecure --server ADDR ARGS...`, feeding `stdin` if given.
pub fn cli(server: &str, args: &[&str], stdin: Option<&str>) -> CliRun {
    cli_with(&["--insecure"], server, args, stdin)
}

/// Runs `meridian GLOBAL... --server ADDR ARGS...` (GLOBAL: `--insecure` or TLS flags).
pub fn cli_with(global: &[&str], server: &str, args: &[&str], stdin: Option<&str>) -> CliRun {
    use std::io::Write;
    let mut command = Command::new(binary("meridian"));
    command
        .args(global)
        .args(["--server", server])
        .args(args)
        .env_remove("MERIDIAN_SERVER")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("spawn meridian CLI");
    if let Some(mut pipe) = child.stdin.take() {
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes()).expect("write CLI stdin");
        }
    }
    child.wait_with_output().expect("run meridian CLI").into()
}

/// What a node holds for one service's endpoints in one cluster: sorted
/// `address:port health` strings, or `None` if the object does not exist.
pub async fn endpoints_of(
    node: &ServerNode,
    namespace: &str,
    name: &str,
    cluster: &str,
) -> Option<Vec<String>> {
    use meridian_proto::v1::{Consistency, GetRequest, ResourceKey};
    let mut client = node.client().await?;
    let request = GetRequest {
        key: Some(ResourceKey {
            kind: "Endpoints".into(),
            namespace: namespace.into(),
            name: name.into(),
            cluster: cluster.into(),
        }),
        consistency: Consistency::Stale as i32,
    };
    let reply = client.get(request).await.ok()?.into_inner();
    let manifest: serde_json::Value = serde_json::from_str(&reply.manifest_json).ok()?;
    let mut endpoints: Vec<String> = manifest["spec"]["endpoints"]
        .as_array()?
        .iter()
        .map(|e| {
            format!(
                "{}:{} {}",
                e["address"].as_str().unwrap_or(""),
                e["port"],
                e["health"].as_str().unwrap_or("")
            )
        })
        .collect();
    endpoints.sort();
    Some(endpoints)
}

/// A cluster's status as `get clusters -o json` shows it.
pub fn cluster_status(server: &str, cluster: &str) -> Option<serde_json::Value> {
    let run = cli(
        server,
        &["get", "clusters", "-o", "json", "--consistency", "stale"],
        None,
    );
    let value: serde_json::Value = serde_json::from_str(&run.stdout).ok()?;
    value["items"]
        .as_array()?
        .iter()
        .find(|c| c["metadata"]["name"] == cluster)
        .map(|c| c["status"].clone())
}
