//! The scenario the demo plays on its mesh, narrated, with traffic running
//! throughout: steady split traffic, the local endpoints dying, the Raft
//! leader dying, the endpoints coming back.

use super::{
    control::ClusterState,
    mesh::{Mesh, HOST},
    process::Tasks,
    traffic::{self, Recorder, Window},
    view,
};
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// How often the windows are taken and the view drawn.
const TICK: Duration = Duration::from_millis(250);
/// Ticks in the view's "last second".
const TICKS_SHOWN: usize = 4;
/// How often the control plane's state is read.
const POLL: Duration = Duration::from_millis(500);
/// The proxy whose local endpoints fail (the first cluster's).
const LOCAL: usize = 0;

pub struct Demo<'m> {
    mesh: &'m mut Mesh,
    recorders: Vec<Recorder>,
    /// The last ticks' windows per proxy, newest last.
    recent: Vec<VecDeque<Window>>,
    /// Everything each proxy's clients saw in the current step.
    step_totals: Vec<Window>,
    state: Arc<Mutex<ClusterState>>,
    _background: Vec<Tasks>,
    started: Instant,
    step: String,
    narration: Vec<String>,
    hints: Vec<String>,
    live: bool,
    last_line: Instant,
}

/// One step's outcome for the summary: its line, and whether what it waited
/// for happened.
struct StepOutcome {
    line: String,
    completed: bool,
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

impl<'m> Demo<'m> {
    /// Starts the traffic through every proxy and the reading of the
    /// control plane's state.
    pub fn new(mesh: &'m mut Mesh, rate: u32, live: bool) -> Demo<'m> {
        let recorders: Vec<Recorder> = mesh.proxies.iter().map(|_| Recorder::default()).collect();
        let mut background: Vec<Tasks> = mesh
            .proxies
            .iter()
            .zip(&recorders)
            .map(|(proxy, recorder)| traffic::start(proxy.listener, HOST, rate, recorder))
            .collect();
        let state = Arc::new(Mutex::new(ClusterState::default()));
        let (control, shared) = (mesh.control.clone(), state.clone());
        background.push(Tasks(vec![tokio::spawn(async move {
            loop {
                let now = control.state().await;
                *shared.lock().unwrap_or_else(|e| e.into_inner()) = now;
                tokio::time::sleep(POLL).await;
            }
        })]));
        let hints = hints(mesh);
        if !live {
            showln!("in another terminal:");
            for hint in &hints {
                showln!("  {hint}");
            }
        }
        Demo {
            recent: recorders.iter().map(|_| VecDeque::new()).collect(),
            step_totals: recorders.iter().map(|_| Window::default()).collect(),
            recorders,
            state,
            _background: background,
            started: Instant::now(),
            step: "traffic is running".into(),
            narration: Vec::new(),
            hints,
            live,
            last_line: Instant::now(),
            mesh,
        }
    }

    fn state(&self) -> ClusterState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The newest tick's window of one proxy.
    fn latest(&self, proxy: usize) -> Window {
        self.recent[proxy].back().cloned().unwrap_or_default()
    }

    /// Adds a line to the story; without a terminal, prints it at once.
    fn say(&mut self, text: impl Into<String>) {
        let line = format!("[{:>6.1} s] {}", self.elapsed().as_secs_f64(), text.into());
        if !self.live {
            showln!("{line}");
        }
        self.narration.push(line);
    }

    fn begin(&mut self, step: &str) {
        self.step = step.to_string();
        self.step_totals = self.recorders.iter().map(|_| Window::default()).collect();
        self.say(step.to_string());
    }

    /// One tick: the proxies' windows are taken and the view drawn.
    async fn tick(&mut self) {
        tokio::time::sleep(TICK).await;
        for (i, recorder) in self.recorders.iter().enumerate() {
            let window = recorder.take();
            self.step_totals[i].merge(&window);
            let recent = &mut self.recent[i];
            recent.push_back(window);
            while recent.len() > TICKS_SHOWN {
                recent.pop_front();
            }
        }
        self.draw();
    }

    fn draw(&mut self) {
        let state = self.state();
        let last_seconds: Vec<Window> = self
            .recent
            .iter()
            .map(|ticks| {
                ticks.iter().fold(Window::default(), |mut all, w| {
                    all.merge(w);
                    all
                })
            })
            .collect();
        let frame = view::Frame {
            elapsed: self.elapsed(),
            step: &self.step,
            state: &state,
            proxies: self
                .mesh
                .proxies
                .iter()
                .zip(&last_seconds)
                .map(|(proxy, last_second)| view::ProxyRow {
                    name: &proxy.name,
                    last_second,
                    route_version: state.route_version(&proxy.name),
                })
                .collect(),
            narration: &self.narration,
            hints: &self.hints,
        };
        if self.live {
            show!("\x1b[H\x1b[2J{}", view::live(&frame));
        } else if self.last_line.elapsed() >= Duration::from_secs(1) {
            showln!("{}", view::line(&frame));
            self.last_line = Instant::now();
        }
    }

    /// Ticks until `condition` holds (how long that took) or `limit` passes.
    async fn wait_for(
        &mut self,
        limit: Duration,
        mut condition: impl FnMut(&Demo) -> bool,
    ) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            self.tick().await;
            if condition(self) {
                return Some(start.elapsed());
            }
        }
        None
    }

    /// Ticks until `until`.
    async fn hold(&mut self, until: Instant) {
        while Instant::now() < until {
            self.tick().await;
        }
    }

    /// Runs the mesh with its traffic for `limit`, or until interrupted.
    pub async fn run_until(&mut self, limit: Option<Duration>) {
        self.say("the mesh is running; Ctrl-C stops it");
        let end = limit.map(|l| Instant::now() + l);
        while end.is_none_or(|end| Instant::now() < end) {
            self.tick().await;
        }
    }

    /// The failed requests of the current step, over every proxy.
    fn step_failed(&self) -> u64 {
        self.step_totals.iter().map(|w| w.failed).sum()
    }

    fn step_requests(&self) -> u64 {
        self.step_totals.iter().map(Window::total).sum()
    }

    /// "0 failed requests of 1,234" and the last error, if any.
    fn failures(&self) -> String {
        let mut text = format!(
            "{} failed requests of {}",
            self.step_failed(),
            self.step_requests()
        );
        if let Some(error) = self.step_totals.iter().find_map(|w| w.last_error.as_ref()) {
            text.push_str(&format!(" (last error: {error})"));
        }
        text
    }

    /// Plays the four steps in `total` (each gets a quarter, more if an event
    /// takes longer) and prints the summary; whether every step completed.
    pub async fn play(&mut self, total: Duration) -> bool {
        let slot = total / 4;
        let outcomes = [
            self.steady(slot).await,
            self.endpoints_fail(slot).await,
            self.leader_dies(slot).await,
            self.endpoints_return(slot).await,
        ];
        if self.live {
            self.draw();
        }
        showln!("\nsummary");
        for outcome in &outcomes {
            showln!("  {}", outcome.line);
        }
        outcomes.iter().all(|o| o.completed)
    }

    async fn steady(&mut self, slot: Duration) -> StepOutcome {
        let end = Instant::now() + slot;
        self.begin("step 1 of 4: steady traffic through the 80/20 split, each proxy served by its own cluster");
        self.hold(end).await;
        let all = self
            .step_totals
            .iter()
            .fold(Window::default(), |mut all, w| {
                all.merge(w);
                all
            });
        let (v1, v2) = (all.share("/checkout-v1/"), all.share("/checkout-v2/"));
        StepOutcome {
            line: format!(
                "steady: split v1 {:.0}% / v2 {:.0}%, {}",
                v1 * 100.0,
                v2 * 100.0,
                self.failures()
            ),
            completed: all.answered() > 0,
        }
    }

    async fn endpoints_fail(&mut self, slot: Duration) -> StepOutcome {
        let end = Instant::now() + slot;
        let (local, cluster) = {
            let proxy = &self.mesh.proxies[LOCAL];
            (proxy.name.clone(), proxy.cluster)
        };
        self.begin(format!("step 2 of 4: {cluster}'s endpoints fail; its proxy's traffic moves to the other region").as_str());
        self.mesh.kill_upstreams(cluster).await;
        self.say(format!(
            "killed {cluster}'s three upstream processes (SIGKILL)"
        ));
        let own = format!("{cluster}/");
        let moved = self
            .wait_for(Duration::from_secs(30), |demo| {
                let window = demo.latest(LOCAL);
                window.answered() > 0 && window.answered_by(&own) == 0
            })
            .await;
        match moved {
            Some(after) => self.say(format!(
                "{local}: every answer now comes from the other region ({} after the kill); {}",
                secs(after),
                self.failures()
            )),
            None => self.say(format!("{local}: traffic did not move within 30 s")),
        }
        self.hold(end).await;
        StepOutcome {
            line: match moved {
                Some(after) => format!(
                    "endpoint failure: {local}'s traffic moved to the other region within {}, {}",
                    secs(after),
                    self.failures()
                ),
                None => format!(
                    "endpoint failure: traffic did NOT move, {}",
                    self.failures()
                ),
            },
            completed: moved.is_some(),
        }
    }

    async fn leader_dies(&mut self, slot: Duration) -> StepOutcome {
        let end = Instant::now() + slot;
        self.begin("step 3 of 4: the Raft leader dies; a new one is elected, writes go on, proxies keep routing");
        let Some(leader) = self.state().leader() else {
            return StepOutcome {
                line: "leader kill: no leader to kill".into(),
                completed: false,
            };
        };
        let before: Vec<Option<String>> = {
            let state = self.state();
            self.mesh
                .proxies
                .iter()
                .map(|p| state.route_version(&p.name).map(str::to_string))
                .collect()
        };
        if let Some(node) = self.mesh.node_mut(leader) {
            node.kill().await;
        }
        let killed_at = Instant::now();
        self.say(format!("killed the leader, node-{leader} (SIGKILL)"));
        let elected = self
            .wait_for(Duration::from_secs(30), |demo| {
                demo.state().leader().is_some_and(|l| l != leader)
            })
            .await;
        let new_leader = self.state().leader();
        match (elected, new_leader) {
            (Some(after), Some(new)) => self.say(format!(
                "node-{new} elected leader {} after the kill",
                secs(after)
            )),
            _ => self.say("no new leader within 30 s"),
        }

        // A write through the survivors: the split moves to 50/50.
        let (control, split) = (self.mesh.control.clone(), self.mesh.split(50));
        let write = tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let attempt =
                    tokio::time::timeout(Duration::from_secs(5), control.apply(&split)).await;
                match attempt {
                    Ok(Ok(())) => return true,
                    _ if Instant::now() > deadline => return false,
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        let _ = self
            .wait_for(Duration::from_secs(40), |_| write.is_finished())
            .await;
        let written = match write.await {
            Ok(true) => Some(killed_at.elapsed()),
            _ => None,
        };
        let pushed = match written {
            Some(after) => {
                self.say(format!(
                    "a write (the split to 50/50) committed {} after the kill",
                    secs(after)
                ));
                let names: Vec<String> = self.mesh.proxies.iter().map(|p| p.name.clone()).collect();
                let reached = self
                    .wait_for(Duration::from_secs(30), |demo| {
                        let state = demo.state();
                        names.iter().zip(&before).all(|(name, old)| {
                            let now = state.route_version(name);
                            now.is_some() && now != old.as_deref()
                        })
                    })
                    .await
                    .map(|_| killed_at.elapsed());
                match reached {
                    Some(at) => self.say(format!(
                        "every proxy ACKed the new routes {} after the kill",
                        secs(at)
                    )),
                    None => self.say("the new routes did not reach every proxy within 30 s"),
                }
                reached
            }
            None => {
                self.say("no write succeeded within 30 s");
                None
            }
        };

        // The old leader comes back from its own disk and catches up.
        let restarted = self.mesh.node_mut(leader).map(|node| node.start());
        let caught_up = match restarted {
            Some(Ok(())) => {
                self.say(format!("restarted node-{leader} on its data directory"));
                let target = new_leader
                    .and_then(|l| self.state().status_of(l).map(|s| s.commit_index))
                    .unwrap_or(0);
                let after = self
                    .wait_for(Duration::from_secs(60), |demo| {
                        demo.state()
                            .status_of(leader)
                            .is_some_and(|s| s.applied_index >= target && s.leader.is_some())
                    })
                    .await;
                match after {
                    Some(after) => self.say(format!(
                        "node-{leader} caught up (applied index {target}) {} after restarting",
                        secs(after)
                    )),
                    None => self.say(format!("node-{leader} did not catch up within 60 s")),
                }
                after
            }
            Some(Err(e)) => {
                self.say(format!("restarting node-{leader} failed: {e:#}"));
                None
            }
            None => None,
        };
        self.hold(end).await;
        let completed = elected.is_some() && pushed.is_some() && caught_up.is_some();
        let line = match (elected, new_leader, written, pushed, caught_up) {
            (Some(e), Some(new), Some(w), Some(p), Some(c)) => format!(
                "leader kill: node-{leader} killed, node-{new} elected in {}, a write committed {} and reached every proxy {} after the kill, node-{leader} caught up {} after restarting, {}",
                secs(e), secs(w), secs(p), secs(c), self.failures()
            ),
            _ => format!("leader kill: did NOT complete (see above), {}", self.failures()),
        };
        StepOutcome { line, completed }
    }

    async fn endpoints_return(&mut self, slot: Duration) -> StepOutcome {
        let end = Instant::now() + slot;
        let (local, cluster) = {
            let proxy = &self.mesh.proxies[LOCAL];
            (proxy.name.clone(), proxy.cluster)
        };
        self.begin(format!("step 4 of 4: {cluster}'s endpoints come back; traffic returns once their ejection runs out").as_str());
        let started = self.mesh.start_upstreams(cluster);
        if let Err(e) = started {
            self.say(format!("restarting {cluster}'s upstreams failed: {e:#}"));
        } else {
            self.say(format!(
                "restarted {cluster}'s upstreams on their old ports"
            ));
        }
        let own = format!("{cluster}/");
        let back = self
            .wait_for(Duration::from_secs(90), |demo| {
                let window = demo.latest(LOCAL);
                window.answered() > 0 && window.share(&own) >= 0.9
            })
            .await;
        match back {
            Some(after) => self.say(format!(
                "{local}: traffic back on {cluster} {} after the restart",
                secs(after)
            )),
            None => self.say(format!("{local}: traffic did not return within 90 s")),
        }
        self.hold(end).await;
        StepOutcome {
            line: match back {
                Some(after) => format!(
                    "recovery: {local}'s traffic back on {cluster} {} after its endpoints returned, {}",
                    secs(after),
                    self.failures()
                ),
                None => format!("recovery: traffic did NOT return, {}", self.failures()),
            },
            completed: back.is_some(),
        }
    }
}

/// Commands that show the same state from another terminal.
fn hints(mesh: &Mesh) -> Vec<String> {
    let operator = &mesh.operator;
    let meridian = std::env::current_exe().unwrap_or_else(|_| "meridian".into());
    let mut hints = vec![
        format!("alias meridian={}", meridian.display()),
        format!(
            "export MERIDIAN_SERVER={} MERIDIAN_CERT={} MERIDIAN_KEY={} MERIDIAN_TRUST_BUNDLE={}",
            mesh.control.servers,
            operator.cert.display(),
            operator.key.display(),
            operator.bundle.display()
        ),
        "meridian status; meridian members list".into(),
        "meridian get clusters; meridian get trafficsplits -n shop; meridian get failoverpolicies -n shop".into(),
        "meridian get endpoints -n shop; meridian get proxies".into(),
        "meridian explain shop/checkout-v1 --cluster east   (the tiers and shares east's proxy uses now)".into(),
    ];
    for proxy in &mesh.proxies {
        hints.push(format!(
            "curl -H 'Host: {HOST}' http://{}/   curl http://{}/clusters   ({})",
            proxy.listener, proxy.admin, proxy.name
        ));
    }
    hints
}
