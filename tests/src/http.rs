//! A minimal HTTP/1.1 GET over a raw socket, enough to probe /healthz,
//! /readyz and /metrics without an HTTP client dependency.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Returns (status code, body), or `None` if the server did not answer.
pub async fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    get_host(addr, addr, path).await
}

/// A GET with its own Host header, on a connection of its own.
pub async fn get_host(addr: &str, host: &str, path: &str) -> Option<(u16, String)> {
    get_with(addr, host, path, &[]).await
}

/// A GET with its own Host and more headers, on a connection of its own.
pub async fn get_with(
    addr: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// The sum of a metric's samples whose line starts with `prefix` (name and
/// labels) in the Prometheus exposition at `addr`.
pub async fn metric(addr: &str, prefix: &str) -> f64 {
    let (_, text) = get(addr, "/metrics").await.expect("metrics");
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
