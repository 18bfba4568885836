//! One `meridian-proxy` process, killed on drop, and an HTTP client to send
//! requests through it.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

pub struct ProxyProcess {
    pub admin: String,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl ProxyProcess {
    pub fn new(root: &Path, node_id: &str, cluster: &str, xds: &[&str]) -> Self {
        let admin = format!("127.0.0.1:{}", crate::free_port());
        let args = vec![
            "--xds".into(),
            xds.join(","),
            "--node-id".into(),
            node_id.into(),
            "--cluster".into(),
            cluster.into(),
            "--admin-addr".into(),
            admin.clone(),
            "--state-dir".into(),
            root.join(format!("{node_id}-state")).display().to_string(),
        ];
        ProxyProcess {
            admin,
            args,
            child: None,
            log: root.join(format!("{node_id}.log")),
        }
    }

    /// More flags for the proxy (before it starts).
    pub fn with_args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open proxy log");
        let child = Command::new(crate::binary("meridian-proxy"))
            .args(&self.args)
            .env("MERIDIAN_LOG", "info,meridian_proxy=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn meridian-proxy");
        self.child = Some(child);
    }

    /// Sends SIGTERM (graceful drain).
    pub fn terminate(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(_))) | None => {
                self.child = None;
                true
            }
            _ => false,
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- proxy log ---\n{}",
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
    }
}

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// GET `http://ADDR/PATH` with the given Host header: (status, body).
pub async fn get(client: &HttpClient, addr: &str, host: &str, path: &str) -> Option<(u16, String)> {
    let request = hyper::Request::get(format!("http://{addr}{path}"))
        .header(hyper::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .ok()?;
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(10), client.request(request))
            .await
            .ok()?
            .ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}
