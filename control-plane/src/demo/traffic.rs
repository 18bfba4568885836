//! Steady client traffic through one proxy, tallied in windows: which
//! upstream answered each request, and which requests failed.

use super::process::Tasks;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

/// What one proxy's clients saw since the last `take`.
#[derive(Debug, Default, Clone)]
pub struct Window {
    /// Successful answers per upstream name (`CLUSTER/SERVICE/INSTANCE`).
    pub ok: BTreeMap<String, u64>,
    pub failed: u64,
    pub last_error: Option<String>,
}

impl Window {
    pub fn answered(&self) -> u64 {
        self.ok.values().sum()
    }

    pub fn total(&self) -> u64 {
        self.answered() + self.failed
    }

    /// Answers from the upstreams whose name (`CLUSTER/SERVICE/INSTANCE`)
    /// contains `part` (`east/`, `/checkout-v1/`, a whole name).
    pub fn answered_by(&self, part: &str) -> u64 {
        self.ok
            .iter()
            .filter(|(name, _)| name.contains(part))
            .map(|(_, n)| n)
            .sum()
    }

    /// The share (0–1) of answers from the upstreams whose name contains `part`.
    pub fn share(&self, part: &str) -> f64 {
        match self.answered() {
            0 => 0.0,
            all => self.answered_by(part) as f64 / all as f64,
        }
    }

    pub fn merge(&mut self, other: &Window) {
        for (name, n) in &other.ok {
            *self.ok.entry(name.clone()).or_default() += n;
        }
        self.failed += other.failed;
        if other.last_error.is_some() {
            self.last_error.clone_from(&other.last_error);
        }
    }
}

/// Where the clients of one proxy record what they saw.
#[derive(Debug, Default, Clone)]
pub struct Recorder(Arc<Mutex<Window>>);

impl Recorder {
    fn record(&self, outcome: Result<String, String>) {
        let mut window = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(upstream) => *window.ok.entry(upstream).or_default() += 1,
            Err(why) => {
                window.failed += 1;
                window.last_error = Some(why);
            }
        }
    }

    /// The window so far; a new one starts.
    pub fn take(&self) -> Window {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// How many requests are in flight at once per proxy.
const CLIENTS: u32 = 4;

/// Clients sending `rate` GET requests a second for `host` to `proxy`.
pub fn start(proxy: SocketAddr, host: &str, rate: u32, recorder: &Recorder) -> Tasks {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    let every = Duration::from_secs_f64(f64::from(CLIENTS) / f64::from(rate.max(1)));
    let tasks = (0..CLIENTS)
        .map(|_| {
            let (client, recorder, host) = (client.clone(), recorder.clone(), host.to_string());
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    recorder.record(request(&client, proxy, &host).await);
                }
            })
        })
        .collect();
    Tasks(tasks)
}

/// One request on a connection of its own: the upstream that answered.
pub async fn once(proxy: SocketAddr, host: &str) -> Result<String, String> {
    request(
        &Client::builder(TokioExecutor::new()).build_http(),
        proxy,
        host,
    )
    .await
}

/// One request: the name of the upstream that answered, or why it failed.
async fn request(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    proxy: SocketAddr,
    host: &str,
) -> Result<String, String> {
    let request = http::Request::get(format!("http://{proxy}/"))
        .header(http::header::HOST, host)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let text = String::from_utf8_lossy(&body).trim().to_string();
        if status.is_success() {
            Ok(text)
        } else {
            Err(format!("{status}: {text}"))
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer within 5 s".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_count_answers_by_prefix() {
        let recorder = Recorder::default();
        for name in ["east/v1/a", "east/v1/a", "east/v2/a", "west/v1/a"] {
            recorder.record(Ok(name.to_string()));
        }
        recorder.record(Err("502".into()));
        let window = recorder.take();
        assert_eq!(window.total(), 5);
        assert_eq!(window.answered_by("east/"), 3);
        assert!((window.share("west/") - 0.25).abs() < 1e-9);
        assert_eq!(window.last_error.as_deref(), Some("502"));
        assert_eq!(recorder.take().total(), 0, "take starts a new window");
    }
}
