//! A Kubernetes API server for tests, speaking the wire protocol the real
//! `kube` client uses: list and watch of v1 Services, v1 Nodes and
//! discovery.k8s.io/v1 EndpointSlices, resourceVersions, chunked watch
//! streams with bookmarks, and `410 Gone` (an ERROR event with an Expired
//! Status) for a resourceVersion older than its retained history. It can
//! compact its history, drop every watch, and go down and come back.

use axum::{
    body::{Body, Bytes},
    extract::{Query, State},
    routing::get,
    Router,
};
use serde_json::{json, Value};
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::{broadcast, watch};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    EndpointSlice,
    Node,
}

impl Kind {
    fn api_version(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::Service | Kind::Node => "v1",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Node => "Node",
        }
    }
}

#[derive(Debug, Clone)]
struct Event {
    rv: u64,
    kind: Kind,
    kind_of_change: &'static str,
    object: Value,
}

#[derive(Default)]
struct Store {
    rv: u64,
    objects: BTreeMap<(Kind, String, String), Value>,
    history: Vec<Event>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
}

struct Shared {
    store: Mutex<Store>,
    events: broadcast::Sender<Event>,
    /// Bumped to end every open watch.
    generation: watch::Sender<u64>,
    /// How many watch requests were answered with 410.
    gone: Mutex<u64>,
}

pub struct FakeKube {
    pub port: u16,
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeKube {
    pub async fn start() -> Self {
        let (events, _) = broadcast::channel(1024);
        let (generation, _) = watch::channel(0);
        let mut server = FakeKube {
            port: crate::free_port(),
            shared: Arc::new(Shared {
                store: Mutex::new(Store::default()),
                events,
                generation,
                gone: Mutex::new(0),
            }),
            task: None,
        };
        server.up().await;
        server
    }

    /// A kubeconfig that points the `kube` client here.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"http://127.0.0.1:{}\"}}\nusers:\n- name: tester\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: tester}}\ncurrent-context: fake\n",
            self.port
        )
    }

    pub async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind fake API port");
        let state = self.shared.clone();
        let app = Router::new()
            .route("/api/v1/services", get(|s, q| handle(s, q, Kind::Service)))
            .route("/api/v1/nodes", get(|s, q| handle(s, q, Kind::Node)))
            .route(
                "/apis/discovery.k8s.io/v1/endpointslices",
                get(|s, q| handle(s, q, Kind::EndpointSlice)),
            )
            .with_state(state);
        self.task = Some(tokio::spawn(serve(listener, app)));
    }

    /// Stops serving: open connections (and the watches on them) break, new
    /// ones are refused. Every connection is a task of the serving task, so
    /// none outlives it: `axum::serve` would let a connection finish its
    /// response, and a watch resumed on a kept-alive connection in that
    /// moment went on as though the server were up.
    pub async fn down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.drop_watches();
    }

    /// Creates or replaces an object.
    pub fn put(&self, kind: Kind, mut object: Value) {
        let mut store = self.shared.store.lock().expect("lock");
        store.rv += 1;
        let rv = store.rv;
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.name());
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        object["metadata"]["uid"] = json!(format!(
            "uid-{}",
            object["metadata"]["name"].as_str().unwrap_or("")
        ));
        let key = (kind, namespace_of(&object), name_of(&object));
        let change = if store.objects.insert(key, object.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let event = Event {
            rv,
            kind,
            kind_of_change: change,
            object,
        };
        store.history.push(event.clone());
        let _ = self.shared.events.send(event);
    }

    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) {
        let mut store = self.shared.store.lock().expect("lock");
        let Some(mut object) =
            store
                .objects
                .remove(&(kind, namespace.to_string(), name.to_string()))
        else {
            return;
        };
        store.rv += 1;
        let rv = store.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let event = Event {
            rv,
            kind,
            kind_of_change: "DELETED",
            object,
        };
        store.history.push(event.clone());
        let _ = self.shared.events.send(event);
    }

    /// Forgets all history, so resuming any watch needs a relist (410).
    pub fn compact(&self) {
        let mut store = self.shared.store.lock().expect("lock");
        store.compacted = store.rv + 1;
        store.history.clear();
    }

    /// Ends every open watch stream; clients resume from their last resourceVersion.
    pub fn drop_watches(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// How many watches were told 410 Gone.
    pub fn gone_count(&self) -> u64 {
        *self.shared.gone.lock().expect("lock")
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Serves `app` on `listener`, each connection a task of this one: dropping
/// (aborting) this future aborts every connection at once.
async fn serve(listener: tokio::net::TcpListener, app: Router) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                connections.spawn(async move {
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let _ = builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

fn namespace_of(object: &Value) -> String {
    object["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn name_of(object: &Value) -> String {
    object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn line(value: &Value) -> Result<Bytes, std::io::Error> {
    let mut text = value.to_string();
    text.push('\n');
    Ok(Bytes::from(text))
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    kind: Kind,
) -> axum::response::Response {
    let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    if !watching {
        let store = shared.store.lock().expect("lock");
        let items: Vec<Value> = store
            .objects
            .iter()
            .filter(|((k, _, _), _)| *k == kind)
            .map(|(_, o)| o.clone())
            .collect();
        let list = json!({
            "apiVersion": kind.api_version(),
            "kind": format!("{}List", kind.name()),
            "metadata": {"resourceVersion": store.rv.to_string()},
            "items": items,
        });
        return axum::response::Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(list.to_string()))
            .unwrap_or_default();
    }
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(290u64);
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let (backlog, mut live, current_rv) = {
        let store = shared.store.lock().expect("lock");
        if from != 0 && from < store.compacted {
            *shared.gone.lock().expect("lock") += 1;
            let status = json!({"type": "ERROR", "object": {
                "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {from} ({})", store.compacted),
                "reason": "Expired", "code": 410,
            }});
            return axum::response::Response::builder()
                .header("content-type", "application/json")
                .body(Body::from(format!("{status}\n")))
                .unwrap_or_default();
        }
        let backlog: Vec<Event> = store
            .history
            .iter()
            .filter(|e| e.kind == kind && e.rv > from)
            .cloned()
            .collect();
        (backlog, shared.events.subscribe(), store.rv)
    };
    let mut generation = shared.generation.subscribe();
    generation.mark_unchanged();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let mut rv = current_rv.max(from);
        for event in backlog {
            rv = rv.max(event.rv);
            if tx
                .send(line(
                    &json!({"type": event.kind_of_change, "object": event.object}),
                ))
                .await
                .is_err()
            {
                return;
            }
        }
        let mut bookmark = tokio::time::interval(Duration::from_secs(1));
        loop {
            let value = tokio::select! {
                _ = &mut deadline => return,
                _ = generation.changed() => return,
                event = live.recv() => match event {
                    Ok(event) if event.kind == kind && event.rv > rv => {
                        rv = event.rv;
                        json!({"type": event.kind_of_change, "object": event.object})
                    }
                    Ok(_) => continue,
                    Err(_) => return,
                },
                _ = bookmark.tick(), if bookmarks => json!({"type": "BOOKMARK", "object": {
                    "apiVersion": kind.api_version(), "kind": kind.name(),
                    "metadata": {"resourceVersion": rv.to_string()},
                }}),
            };
            if tx.send(line(&value)).await.is_err() {
                return;
            }
        }
    });
    axum::response::Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap_or_default()
}

/// Test objects.
pub mod objects {
    use serde_json::{json, Value};

    pub fn node(name: &str, zone: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}}})
    }

    pub fn service(namespace: &str, name: &str, exported: bool) -> Value {
        let labels = if exported {
            json!({"meridian.io/export": "true"})
        } else {
            json!({})
        };
        json!({
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "web"}]},
        })
    }

    /// An endpoint: (ip, ready, terminating, zone, node).
    pub type Ep<'a> = (&'a str, bool, bool, Option<&'a str>, Option<&'a str>);

    pub fn slice(namespace: &str, name: &str, service: &str, endpoints: &[Ep<'_>]) -> Value {
        let endpoints: Vec<Value> = endpoints
            .iter()
            .map(|(ip, ready, terminating, zone, node)| {
                let mut ep = json!({
                    "addresses": [ip],
                    "conditions": {"ready": ready, "serving": *ready || *terminating, "terminating": terminating},
                });
                if let Some(zone) = zone {
                    ep["zone"] = json!(zone);
                }
                if let Some(node) = node {
                    ep["nodeName"] = json!(node);
                }
                ep
            })
            .collect();
        json!({
            "metadata": {"name": name, "namespace": namespace, "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "metrics", "port": 9090, "protocol": "TCP"}, {"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Down means down: a watch open at that moment breaks (no final chunk),
    /// as it would when a real API server dies, rather than ending cleanly
    /// and leaving its connection free for the client to resume on.
    #[tokio::test]
    async fn going_down_breaks_an_open_watch() {
        let mut api = FakeKube::start().await;
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", api.port))
            .await
            .expect("connect");
        stream
            .write_all(
                b"GET /api/v1/services?watch=true&resourceVersion=0 HTTP/1.1\r\nhost: fake\r\n\r\n",
            )
            .await
            .expect("write");
        let mut head = vec![0u8; 1024];
        let read = stream.read(&mut head).await.expect("read the head");
        assert!(
            head[..read].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&head[..read])
        );
        api.down().await;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
            .await
            .expect("the connection to close");
        let all = [&head[..read], &rest[..]].concat();
        assert!(
            !all.ends_with(b"0\r\n\r\n"),
            "the watch ended cleanly: {:?}",
            String::from_utf8_lossy(&all)
        );
    }
}
