//! The benchmark's ADS clients: a set of them in this process, and the
//! same set driven in a separate process (pinned to its own cores, so the
//! figures measure the control plane, not the clients decoding beside it)
//! over its stdin and stdout, one line per step:
//!
//! ```text
//! parent: (starts `meridian-xds-bench --clients SERVERS COUNT FIRST [--light]`)
//! child:  ready FIRST_VIEW_MS
//! parent: mark                 child: marked
//! parent: wait T0_UNIX_US      child: done BYTES LATENCY_US...
//! ```

use meridian_identity::tls::Dialer;
use meridian_tests::xds::{self, AdsClient, Held, ENDPOINT};
use std::io::{BufRead, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Clients in this process, half delta and half state of the world.
pub struct ClientSet {
    clients: Vec<AdsClient>,
    /// Per client, at the last mark: responses and bytes received so far.
    marks: Vec<(usize, u64)>,
}

/// How each client reaches its server.
pub type Dial<'a> = &'a dyn Fn(usize, &str, &str) -> Dialer;

impl ClientSet {
    /// Connects `count` clients numbered from `first`, client `i` to
    /// `servers[i % n]`, in cluster `c{i % clusters}`. `light` clients keep
    /// no load assignment bodies (names and versions only), so ten thousand
    /// fit in memory.
    pub async fn connect(
        servers: &[String],
        (first, count): (usize, usize),
        clusters: usize,
        light: bool,
        dial: Dial<'_>,
    ) -> Self {
        let mut clients = Vec::with_capacity(count);
        for i in first..first + count {
            let (name, cluster) = (format!("bench-{i}"), format!("c{}", i % clusters));
            let id = xds::node(&name, &cluster);
            let channel = dial(i, &name, &cluster)
                .connect(&servers[i % servers.len()])
                .await
                .expect("connect");
            let held = Held {
                drop_endpoint_bodies: light,
                ..Held::default()
            };
            clients.push(if i % 2 == 0 {
                xds::delta_with(channel, id, held).await
            } else {
                xds::sotw_on(channel, id, Some(held), false).await
            });
        }
        ClientSet {
            clients,
            marks: Vec::new(),
        }
    }

    /// Waits until every client holds at least `services` load assignments.
    pub async fn wait_full_view(&self, services: usize) {
        let started = Instant::now();
        let full = |c: &AdsClient| {
            c.with(|h| h.resources.get(ENDPOINT).map(|m| m.len()).unwrap_or(0) >= services)
        };
        while !self.clients.iter().all(full) {
            assert!(
                started.elapsed() < Duration::from_secs(1800),
                "clients did not get the full view"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Remembers where each client stands, before a change.
    pub fn mark(&mut self) {
        self.marks = self
            .clients
            .iter()
            .map(|c| c.with(|h| (h.responses.len(), h.bytes)))
            .collect();
    }

    /// Per client, the time from `t0` (when the change was written) until
    /// its first load assignment since the mark; then the resource bytes
    /// all clients received since the mark.
    pub async fn wait_change(&self, t0: SystemTime) -> (Vec<Duration>, u64) {
        let since_t0 = SystemTime::now().duration_since(t0).unwrap_or_default();
        let t0 = Instant::now() - since_t0;
        let mut done = vec![None; self.clients.len()];
        while done.iter().any(Option::is_none) {
            for (i, client) in self.clients.iter().enumerate() {
                if done[i].is_some() {
                    continue;
                }
                let from = self.marks[i].0;
                done[i] = client.with(|h| {
                    h.responses[from..]
                        .iter()
                        .zip(&h.received_at[from..])
                        .find(|((t, _), _)| t == ENDPOINT)
                        .map(|(_, at)| at.saturating_duration_since(t0))
                });
            }
            assert!(
                t0.elapsed() < Duration::from_secs(300),
                "a change did not reach every client"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // What else the change sends arrives within the next moments.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let bytes = self
            .clients
            .iter()
            .zip(&self.marks)
            .map(|(c, (_, b))| c.with(|h| h.bytes) - b)
            .sum();
        (done.into_iter().flatten().collect(), bytes)
    }
}

/// The client process's side: serves the protocol on stdin and stdout.
pub async fn serve_parent(
    servers: Vec<String>,
    numbers: (usize, usize),
    clusters: usize,
    services: usize,
    light: bool,
) {
    let started = Instant::now();
    let insecure = |_: usize, _: &str, _: &str| Dialer::insecure();
    let mut set = ClientSet::connect(&servers, numbers, clusters, light, &insecure).await;
    set.wait_full_view(services).await;
    println!("ready {}", started.elapsed().as_millis());
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.expect("stdin");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("mark") => {
                set.mark();
                println!("marked");
            }
            Some("wait") => {
                let micros: u64 = words.next().and_then(|w| w.parse().ok()).expect("T0");
                let (latencies, bytes) = set
                    .wait_change(UNIX_EPOCH + Duration::from_micros(micros))
                    .await;
                let list: Vec<String> = latencies
                    .iter()
                    .map(|d| d.as_micros().to_string())
                    .collect();
                println!("done {bytes} {}", list.join(" "));
            }
            _ => return,
        }
        let _ = std::io::stdout().flush();
    }
}

/// The parent's handle on a client process.
pub struct Remote {
    child: Child,
    to: ChildStdin,
    from: std::io::BufReader<ChildStdout>,
    /// How long the clients took to connect and hold the full view.
    pub first_view: Duration,
}

impl Remote {
    /// Starts the client process, on `cpus` (taskset's list) when given,
    /// with `count` clients numbered from `first`.
    pub fn start(
        servers: &[String],
        (first, count): (usize, usize),
        light: bool,
        cpus: Option<&str>,
    ) -> Self {
        let exe = std::env::current_exe().expect("own path");
        let mut command = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        command
            .args(["--clients", &servers.join(",")])
            .args([count.to_string(), first.to_string()])
            .args(light.then_some("--light"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = command.spawn().expect("client process");
        let to = child.stdin.take().expect("stdin");
        let from = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut remote = Remote {
            child,
            to,
            from,
            first_view: Duration::ZERO,
        };
        let ready = remote.line();
        let millis = ready
            .strip_prefix("ready ")
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("client process: {ready:?}"));
        remote.first_view = Duration::from_millis(millis);
        remote
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.from
            .read_line(&mut line)
            .expect("client process output");
        line.trim_end().to_string()
    }

    fn send(&mut self, line: &str) {
        writeln!(self.to, "{line}").expect("client process input");
        self.to.flush().expect("client process input");
    }

    pub fn mark(&mut self) {
        self.send("mark");
        assert_eq!(self.line(), "marked");
    }

    /// As [`ClientSet::wait_change`], in the client process.
    pub fn wait_change(&mut self, t0: SystemTime) -> (Vec<Duration>, u64) {
        let micros = t0
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        self.send(&format!("wait {micros}"));
        let line = self.line();
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("done"), "client process: {line:?}");
        let bytes = words.next().and_then(|w| w.parse().ok()).expect("bytes");
        let latencies = words
            .filter_map(|w| w.parse().ok())
            .map(Duration::from_micros)
            .collect();
        (latencies, bytes)
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
