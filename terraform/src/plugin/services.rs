//! The go-plugin services beside the provider: the controller Terraform
//! asks to exit, and the stdio and broker streams it opens (Meridian's
//! provider logs to stderr, which go-plugin already reads, and needs no
//! extra connections), which end when the plugin stops.

use crate::proto::plugin as gp;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

/// A stream that sends nothing and ends when the plugin stops.
fn until_stopped<T: Send + 'static>(
    stop: &watch::Sender<bool>,
) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>> {
    let mut stopped = stop.subscribe();
    let ended = futures::stream::once(async move {
        let _ = stopped.wait_for(|s| *s).await;
    });
    Box::pin(ended.filter_map(|()| async { None }))
}

pub struct Controller(pub watch::Sender<bool>);

#[tonic::async_trait]
impl gp::grpc_controller_server::GrpcController for Controller {
    async fn shutdown(&self, _request: Request<gp::Empty>) -> Result<Response<gp::Empty>, Status> {
        tracing::debug!("Terraform asked the plugin to exit");
        self.0.send_replace(true);
        Ok(Response::new(gp::Empty {}))
    }
}

pub struct Stdio(pub watch::Sender<bool>);

#[tonic::async_trait]
impl gp::grpc_stdio_server::GrpcStdio for Stdio {
    async fn stream_stdio(
        &self,
        _request: Request<gp::Empty>,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<gp::StdioData, Status>> + Send>>>, Status>
    {
        Ok(Response::new(until_stopped(&self.0)))
    }
}

pub struct Broker(pub watch::Sender<bool>);

#[tonic::async_trait]
impl gp::grpc_broker_server::GrpcBroker for Broker {
    async fn start_stream(
        &self,
        _request: Request<Streaming<gp::ConnInfo>>,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<gp::ConnInfo, Status>> + Send>>>, Status>
    {
        Ok(Response::new(until_stopped(&self.0)))
    }
}
