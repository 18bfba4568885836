//! Active health checks: each cluster that asks for them probes its hosts
//! (HTTP GET of a path, or a TCP connect) every interval, and hosts go down
//! and come back by the cluster's thresholds.

use crate::{config::HealthCheckConfig, runtime::Runtime};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use meridian_balance::{HealthTracker, Thresholds};
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Starts a checker per cluster that has a health check; the tasks stop when aborted.
pub fn spawn(runtime: &Arc<Runtime>) -> Vec<JoinHandle<()>> {
    runtime
        .snapshot
        .clusters
        .iter()
        .filter_map(|(name, cluster)| {
            let config = cluster.health_check.clone()?;
            let hosts: Vec<String> = cluster
                .localities
                .iter()
                .flat_map(|l| &l.hosts)
                .map(|h| h.address.clone())
                .collect();
            Some(tokio::spawn(check_cluster(
                runtime.clone(),
                name.clone(),
                hosts,
                config,
            )))
        })
        .collect()
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

async fn check_cluster(
    runtime: Arc<Runtime>,
    cluster: String,
    hosts: Vec<String>,
    config: HealthCheckConfig,
) {
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
                runtime.set_check(&cluster, host, up);
            }
        }
    }
}
