//! HTTP service discovery: the Prometheus `http_sd` JSON format, polled with
//! ETag / If-None-Match, for VM fleets and cloud inventories.
//!
//! ```json
//! [{"targets": ["10.0.0.7:8080"], "labels": {"service": "checkout", "namespace": "shop", "zone": "us-east-1a"}}]
//! ```
//! Labels: `service` (required; `__meta_meridian_service` also works),
//! `namespace` (default `default`), `zone`, `weight`, `health`.

use super::{send_if_new, Source, SourceUpdate};
use crate::{view::normalise, ServiceName, View};
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use meridian_model::{
    spec::{Endpoint, EndpointsSpec, Health},
    Kind, ResourceKey,
};
use serde::Deserialize;
use std::{collections::BTreeMap, time::Duration};
use tokio::sync::mpsc;

/// A larger response is refused rather than read.
const MAX_BODY: usize = 16 * 1024 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
struct TargetGroup {
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Parses an `http_sd` document into a view.
pub fn parse(body: &[u8]) -> Result<View, String> {
    let groups: Vec<TargetGroup> =
        serde_json::from_slice(body).map_err(|e| format!("malformed http_sd JSON: {e}"))?;
    let mut sets: BTreeMap<ServiceName, Vec<Endpoint>> = BTreeMap::new();
    for (i, group) in groups.iter().enumerate() {
        let label = |name: &str| group.labels.get(name).map(String::as_str);
        let service = label("service")
            .or(label("__meta_meridian_service"))
            .ok_or_else(|| format!("group {i}: no 'service' label"))?;
        let namespace = label("namespace").unwrap_or("default");
        ResourceKey::new(Kind::Service, Some(namespace), service, None)
            .map_err(|e| format!("group {i}: {e}"))?;
        let weight = match label("weight") {
            Some(w) => w
                .parse()
                .map_err(|_| format!("group {i}: weight '{w}' is not a number"))?,
            None => 1,
        };
        let health = match label("health").unwrap_or("healthy") {
            "healthy" => Health::Healthy,
            "unhealthy" => Health::Unhealthy,
            "draining" => Health::Draining,
            other => return Err(format!("group {i}: unknown health '{other}'")),
        };
        for target in &group.targets {
            let (address, port) = target
                .rsplit_once(':')
                .ok_or_else(|| format!("group {i}: target '{target}' is not HOST:PORT"))?;
            let port = port
                .parse()
                .map_err(|_| format!("group {i}: target '{target}' has no valid port"))?;
            sets.entry(ServiceName::new(namespace, service))
                .or_default()
                .push(Endpoint {
                    address: address.trim_matches(|c| c == '[' || c == ']').to_string(),
                    port,
                    weight,
                    zone: label("zone").map(str::to_string),
                    health,
                });
        }
    }
    let mut view = View::new();
    for (name, endpoints) in sets {
        let spec = EndpointsSpec { endpoints };
        spec.validate()
            .map_err(|e| format!("{}/{}: {e}", name.namespace, name.name))?;
        view.insert(name, normalise(spec.endpoints));
    }
    Ok(view)
}

pub struct HttpSdSource {
    url: String,
    interval: Duration,
}

impl HttpSdSource {
    pub fn new(url: String, interval: Duration) -> Self {
        HttpSdSource { url, interval }
    }
}

enum Fetched {
    NotModified,
    Body { body: Bytes, etag: Option<String> },
}

async fn fetch(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    url: &str,
    etag: Option<&str>,
) -> Result<Fetched, String> {
    let mut request = hyper::Request::get(url).header("accept", "application/json");
    if let Some(etag) = etag {
        request = request.header("if-none-match", etag);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad URL {url}: {e}"))?;
    let response = tokio::time::timeout(REQUEST_TIMEOUT, client.request(request))
        .await
        .map_err(|_| format!("{url}: no answer within {}s", REQUEST_TIMEOUT.as_secs()))?
        .map_err(|e| format!("{url}: {e}"))?;
    if response.status() == hyper::StatusCode::NOT_MODIFIED {
        return Ok(Fetched::NotModified);
    }
    if !response.status().is_success() {
        return Err(format!("{url}: HTTP {}", response.status()));
    }
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let limited = http_body_util::Limited::new(response.into_body(), MAX_BODY);
    let body = limited
        .collect()
        .await
        .map_err(|e| format!("{url}: reading the body: {e}"))?
        .to_bytes();
    Ok(Fetched::Body { body, etag })
}

impl Source for HttpSdSource {
    fn event_name(&self) -> &'static str {
        "source.http_sd.refresh"
    }

    fn run(self: Box<Self>, updates: mpsc::Sender<SourceUpdate>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
            let mut last = None;
            let mut etag: Option<String> = None;
            loop {
                let update = match fetch(&client, &self.url, etag.as_deref()).await {
                    Ok(Fetched::NotModified) => None,
                    Ok(Fetched::Body {
                        body,
                        etag: new_etag,
                    }) => match parse(&body) {
                        Ok(view) => {
                            etag = new_etag;
                            Some(SourceUpdate::View(view))
                        }
                        Err(e) => Some(SourceUpdate::Error(format!("{}: {e}", self.url))),
                    },
                    Err(e) => Some(SourceUpdate::Error(e)),
                };
                if let Some(update) = update {
                    if !send_if_new(&updates, &mut last, update).await {
                        return;
                    }
                }
                tokio::time::sleep(self.interval).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_groups() {
        let body = br#"[
            {"targets": ["10.0.0.7:8080", "10.0.0.8:8080"], "labels": {"service": "checkout", "namespace": "shop", "zone": "z1"}},
            {"targets": ["[::1]:9000"], "labels": {"__meta_meridian_service": "cart", "weight": "3", "health": "draining"}}
        ]"#;
        let view = parse(body).expect("valid");
        assert_eq!(view[&ServiceName::new("shop", "checkout")].len(), 2);
        let cart = &view[&ServiceName::new("default", "cart")][0];
        assert_eq!(
            (cart.address.as_str(), cart.port, cart.weight, cart.health),
            ("::1", 9000, 3, Health::Draining)
        );
        for bad in [
            &b"{}"[..],
            br#"[{"targets": ["10.0.0.1:80"]}]"#,
            br#"[{"targets": ["10.0.0.1"], "labels": {"service": "a"}}]"#,
            br#"[{"targets": ["nope:80"], "labels": {"service": "a"}}]"#,
            br#"[{"targets": ["10.0.0.1:80"], "labels": {"service": "a", "health": "meh"}}]"#,
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
