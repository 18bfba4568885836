//! The demo's echo upstream (`meridian demo-upstream`, hidden): answers every
//! request with its own name, so the demo sees which endpoint served it.

use anyhow::Context;
use axum::Router;
use std::net::SocketAddr;

pub async fn serve(name: String, listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let answer = format!("{name}\n");
    let app = Router::new().fallback(move || std::future::ready(answer.clone()));
    axum::serve(listener, app).await.context("serving")
}
