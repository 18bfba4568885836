//! Active health checks: each cluster that asks for them probes its hosts
//! (HTTP GET of a path, or a TCP connect) every interval, and hosts go down
//! and come back by the cluster's thresholds.

use crate::{config::HealthCheckConfig, proxy::Proxy, runtime::Runtime};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use meridian_balance::{HealthTracker, Thresholds};
use std::{collections::HashMap, sync::Weak};
use tokio::task::JoinHandle;

/// What a cluster's checker probes, and how: a checker whose cluster keeps
/// the same hosts and settings across a configuration update keeps running,
/// with its counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Checks {
    hosts: Vec<String>,
    config: HealthCheckConfig,
}

/// The checks each cluster of `runtime` asks for.
pub fn wanted(runtime: &Runtime) -> HashMap<String, Checks> {
    runtime
        .snapshot
        .clusters
        .iter()
        .filter_map(|(name, cluster)| {
            let config = cluster.health_check.clone()?;
            let hosts = cluster
                .localities
                .iter()
                .flat_map(|l| &l.hosts)
                .map(|h| h.address.clone())
                .collect();
            Some((name.clone(), Checks { hosts, config }))
        })
        .collect()
}

/// Starts the checker of one cluster; it reports to whatever runtime the
/// proxy serves at the time, and stops with the proxy or when aborted.
pub fn spawn(proxy: Weak<Proxy>, cluster: String, checks: Checks) -> JoinHandle<()> {
    tokio::spawn(check_cluster(proxy, cluster, checks))
}

async fn probe(
    client: &Client<HttpConnector, Empty<Bytes>>,
    host: &str,
    config: &HealthCheckConfig,
) -> bool {
    let attempt = async {
        match &config.http_path {
            Some(path) => {
                let Ok(request) =
                    hyper::Request::get(format!("http://{host}{path}")).body(Empty::new())
                else {
                    return false;
                };
                client
                    .request(request)
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
            None => tokio::net::TcpStream::connect(host).await.is_ok(),
        }
    };
    tokio::time::timeout(config.timeout, attempt)
        .await
        .unwrap_or(false)
}

async fn check_cluster(proxy: Weak<Proxy>, cluster: String, checks: Checks) {
    let Checks { hosts, config } = checks;
    let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut tracker = HealthTracker::new(Thresholds {
        unhealthy: config.unhealthy_threshold,
        healthy: config.healthy_threshold,
    });
    let mut ticker = tokio::time::interval(config.interval);
    loop {
        ticker.tick().await;
        for host in &hosts {
            let passed = probe(&client, host, &config).await;
            if let Some(up) = tracker.record(host, passed) {
                tracing::info!(%cluster, %host, up, "health check changed a host");
                let Some(proxy) = proxy.upgrade() else { return };
                if let Some(runtime) = proxy.current() {
                    runtime.set_check(&cluster, host, up);
                }
            }
        }
    }
}
