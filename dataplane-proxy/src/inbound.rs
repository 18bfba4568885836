//! Terminating service-to-service mutual TLS: an inbound listener in front of
//! a local application, for one service. It accepts mesh proxies of the
//! clusters the service admits (as its routes say), and forwards their
//! requests to the application with the caller's identity in
//! `x-forwarded-client-cert`.

use crate::coalesce::Coalesce;
use crate::forward::{
    local_response, upstream_version, BodyError, BoxError, ProxyBody, TryError, TryRequest,
};
use crate::proxy::Proxy;
use crate::request_span::RequestSpan;
use crate::server;
use crate::upstreams::Try;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{body::Body, http::uri::Authority, Request, Response, StatusCode};
use meridian_identity::spiffe::SpiffeId;
use meridian_identity::tls::{incoming, Credentials, Peer};
use meridian_telemetry::SpanKind;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_stream::StreamExt;

/// `NAMESPACE/NAME@LISTEN_ADDR=APP_ADDR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The service's cluster name, `NAME.NAMESPACE`.
    pub service: String,
    pub listen: SocketAddr,
    /// The application's address (a socket address), as requests name it.
    pub app: Authority,
}

impl std::str::FromStr for Inbound {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let error = || format!("'{text}': expected NAMESPACE/NAME@LISTEN_ADDR=APP_ADDR");
        let (service, addrs) = text.split_once('@').ok_or_else(error)?;
        let (namespace, name) = service.split_once('/').ok_or_else(error)?;
        let (listen, app) = addrs.split_once('=').ok_or_else(error)?;
        if namespace.is_empty() || name.is_empty() {
            return Err(error());
        }
        Ok(Inbound {
            service: format!("{name}.{namespace}"),
            listen: listen.parse().map_err(|_| error())?,
            app: app
                .parse::<SocketAddr>()
                .ok()
                .and_then(|app| Authority::try_from(app.to_string()).ok())
                .ok_or_else(error)?,
        })
    }
}

/// The requests of one mesh proxy's connection to an inbound listener.
#[derive(Clone)]
struct Admitted {
    peer: Peer,
    proxy: Arc<Proxy>,
    inbound: Arc<Inbound>,
    own: Option<SpiffeId>,
}

impl server::Handler for Admitted {
    fn call<B>(
        &self,
        request: Request<B>,
    ) -> impl std::future::Future<Output = Response<ProxyBody>> + Send + use<B>
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BodyError> + Into<BoxError>,
    {
        // All but the application's answer is decided here, before the
        // future: it holds only what waits for that answer (a few words,
        // where the request and this handler made it 2 KiB, moved into the
        // connection's set of streams and copied on every request).
        let (answer, span) = self.admit(request);
        let proxy = self.proxy.clone();
        let inbound = self.inbound.clone();
        async move {
            let response = match answer {
                Ok(answer) => answered(&proxy, &inbound, answer.await),
                Err(refused) => *refused,
            };
            if let Some(span) = span {
                span.finish(response.status());
            }
            response
        }
    }
}

impl Admitted {
    /// The request on its way to the application, or the response that
    /// refuses it (boxed: the rare case); and its span, once it was admitted.
    fn admit<B>(
        &self,
        request: Request<B>,
    ) -> (Result<Try, Box<Response<ProxyBody>>>, Option<RequestSpan>)
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BodyError>,
    {
        let (proxy, inbound) = (&self.proxy, &self.inbound);
        let runtime = proxy.current();
        let service = runtime
            .as_ref()
            .and_then(|r| r.snapshot.clusters.get(&inbound.service));
        let caller = match crate::transport::admit(&self.peer.identity_now(), service) {
            Ok(caller) => caller,
            Err(reason) => {
                tracing::warn!(service = %inbound.service, %reason, "refused an inbound request");
                proxy.metrics.count(&inbound.service, "", "inbound_refused");
                let refused = local_response(StatusCode::FORBIDDEN, &reason);
                return (Err(Box::new(refused)), None);
            }
        };
        let span = RequestSpan::start(
            SpanKind::Server,
            request.headers(),
            request.method(),
            request.uri().path(),
            self.peer
                .remote
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
        );
        span.set("meridian.service", || inbound.service.clone());
        let http2 = service.is_some_and(|s| s.http2);
        let answer = self.forward(&caller, http2, request, &span);
        (answer, Some(span))
    }

    /// Hands an admitted request to the application.
    fn forward<B>(
        &self,
        caller: &SpiffeId,
        http2: bool,
        request: Request<B>,
        span: &RequestSpan,
    ) -> Result<Try, Box<Response<ProxyBody>>>
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BodyError>,
    {
        if let Some(refused) = crate::forward::refuse_asterisk(request.uri()) {
            return Err(Box::new(refused));
        }
        let (mut parts, body) = request.into_parts();
        let xfcc = match &self.own {
            Some(own) => format!("By={own};URI={caller}"),
            None => format!("URI={caller}"),
        };
        if let Ok(value) = hyper::header::HeaderValue::from_str(&xfcc) {
            parts.headers.insert("x-forwarded-client-cert", value);
        }
        parts.version = upstream_version(http2);
        span.inject(&mut parts.headers);
        let upstream = TryRequest::new(
            Request::from_parts(parts, body.map_err(Into::into).boxed()),
            self.inbound.app.clone(),
        );
        Ok(self.proxy.upstreams.local(http2).request(upstream))
    }
}

/// The application's answer, or the response that says it gave none.
fn answered(
    proxy: &Proxy,
    inbound: &Inbound,
    answer: Result<Response<ProxyBody>, TryError>,
) -> Response<ProxyBody> {
    match answer {
        Ok(response) => {
            proxy.metrics.count(&inbound.service, "", "inbound_ok");
            response
        }
        Err(error) => {
            tracing::debug!(service = %inbound.service, %error, "the application failed");
            proxy
                .metrics
                .count(&inbound.service, "", "inbound_app_error");
            local_response(StatusCode::BAD_GATEWAY, "the application did not answer")
        }
    }
}

/// Serves `inbound` on `listener` until the process ends.
pub async fn serve(
    proxy: Arc<Proxy>,
    inbound: Inbound,
    listener: tokio::net::TcpListener,
    credentials: Arc<Credentials>,
) -> anyhow::Result<()> {
    let own = credentials.id();
    let mut connections = incoming(listener, Some(credentials), &[b"h2", b"http/1.1"])?;
    let inbound = Arc::new(inbound);
    tracing::info!(service = %inbound.service, listen = %inbound.listen, app = %inbound.app, "inbound mTLS listener");
    while let Some(connection) = connections.next().await {
        let Ok(connection) = connection else { continue };
        let Some(permit) = proxy.admit() else {
            continue;
        };
        let handler = Admitted {
            peer: connection.peer.clone(),
            proxy: proxy.clone(),
            inbound: inbound.clone(),
            own: own.clone(),
        };
        let (draining, limits) = (proxy.watch_drain(), proxy.limits().clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = server::serve(Coalesce::new(connection), handler, &limits, draining).await;
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_flag() {
        let inbound: Inbound = "shop/web@127.0.0.1:15006=127.0.0.1:8080"
            .parse()
            .expect("valid");
        assert_eq!(inbound.service, "web.shop");
        assert_eq!(inbound.app, "127.0.0.1:8080");
        for bad in [
            "web@1.2.3.4:1=1.2.3.4:2",
            "shop/web@x=1.2.3.4:2",
            "shop/web",
        ] {
            assert!(bad.parse::<Inbound>().is_err(), "{bad}");
        }
    }
}
