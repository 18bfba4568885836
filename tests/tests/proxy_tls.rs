//! TLS on meridian-proxy's listeners, with ALPN: HTTP/2 and HTTP/1.1 over
//! TLS, and plaintext still served on the same port.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use meridian_tests::{
    agreed_leader, cli, eventually, free_port, http, proxy::ProxyProcess, start_cluster,
    upstream::Upstream, ServerOptions,
};
use rustls::pki_types::{CertificateDer, ServerName};
use std::{sync::Arc, time::Duration};
use tokio_rustls::TlsConnector;

const WAIT: Duration = Duration::from_secs(30);

async fn tls_get(
    addr: &str,
    ca: &CertificateDer<'static>,
    alpn: &[u8],
) -> Option<(String, u16, String)> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).ok()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = ServerName::try_from("web.shop").ok()?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .ok()?;
    let negotiated =
        String::from_utf8_lossy(tls.get_ref().1.alpn_protocol().unwrap_or_default()).into_owned();
    let io = TokioIo::new(tls);
    let response = if negotiated == "h2" {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .ok()?;
        tokio::spawn(connection);
        let request = hyper::Request::get("https://web.shop/")
            .body(Empty::<Bytes>::new())
            .ok()?;
        sender.send_request(request).await.ok()?
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.ok()?;
        tokio::spawn(connection);
        let request = hyper::Request::get("/")
            .header("host", "web.shop")
            .body(Empty::<Bytes>::new())
            .ok()?;
        sender.send_request(request).await.ok()?
    };
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((
        negotiated,
        status,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_alpn_and_plaintext_on_one_listener() {
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = start_cluster(root.path(), 1, ServerOptions::default());
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let cp = nodes[0].grpc.clone();
    let upstream = Upstream::start("up").await;
    let port = free_port();
    let mesh = format!(
        "kind: Cluster\nmetadata: {{name: east}}\nspec: {{region: us-east-1}}\n---\n\
         kind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{protocol: http, port: {port}}}\n---\n\
         kind: Endpoints\nmetadata: {{name: web, namespace: shop, cluster: east}}\nspec: {{endpoints: [{{address: 127.0.0.1, port: {}}}]}}\n",
        upstream.port
    );
    assert!(cli(&cp, &["apply", "-f", "-"], Some(&mesh)).ok);

    let certified =
        rcgen::generate_simple_self_signed(vec!["web.shop".to_string()]).expect("certificate");
    let cert_path = root.path().join("web.pem");
    let key_path = root.path().join("web.key");
    std::fs::write(&cert_path, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("write key");
    let ca = certified.cert.der().clone();

    let cert_arg = cert_path.display().to_string();
    let key_arg = key_path.display().to_string();
    let mut proxy = ProxyProcess::new(root.path(), "proxy-tls", "east", &[&cp]).with_args(&[
        "--tls-cert",
        &cert_arg,
        "--tls-key",
        &key_arg,
    ]);
    proxy.start();
    let addr = format!("127.0.0.1:{port}");
    eventually(WAIT, "plaintext through the proxy", || async {
        let (status, _) = http::get_host(&addr, "web.shop", "/").await?;
        (status == 200).then_some(())
    })
    .await;
    assert_eq!(
        tls_get(&addr, &ca, b"h2").await,
        Some(("h2".into(), 200, "up".into()))
    );
    assert_eq!(
        tls_get(&addr, &ca, b"http/1.1").await,
        Some(("http/1.1".into(), 200, "up".into()))
    );
    // A client that does not trust the certificate gets no connection, and nothing else changes.
    let other =
        rcgen::generate_simple_self_signed(vec!["web.shop".to_string()]).expect("certificate");
    assert_eq!(tls_get(&addr, other.cert.der(), b"h2").await, None);
    assert_eq!(
        http::get_host(&addr, "web.shop", "/").await,
        Some((200, "up".into()))
    );
}
