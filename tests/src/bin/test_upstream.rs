//! An upstream HTTP server as a process of its own, so a test can kill it
//! with SIGKILL as a real endpoint dies: it answers every request with its
//! name, after `?delay=MS` milliseconds when asked, and logs each request
//! on arrival (`request METHOD URI` on stderr) for tests to wait on.
//!
//! `meridian-test-upstream NAME PORT`

use axum::{extract::RawQuery, http::Method, routing::any, Router};
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(port)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: meridian-test-upstream NAME PORT");
    };
    let port: u16 = port.parse()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let app = Router::new().fallback(any(move |method: Method, RawQuery(query): RawQuery| {
        let name = name.clone();
        eprintln!("request {method} {}", query.as_deref().unwrap_or(""));
        async move {
            let delay = query
                .as_deref()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("delay=")))
                .and_then(|ms| ms.parse().ok())
                .unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            name
        }
    }));
    axum::serve(listener, app).await?;
    Ok(())
}
