//! Discovery sources behind one trait. A source watches one cluster and
//! sends its full view whenever it changes; when it reads something it
//! cannot use, it reports the error and sends nothing, so the last good
//! view stands.

pub mod file;
pub mod http_sd;
pub mod kubernetes;

use crate::View;
use futures::future::BoxFuture;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq)]
pub enum SourceUpdate {
    View(View),
    /// The source failed; the message says why. The last view stands.
    Error(String),
}

pub trait Source: Send {
    /// Runs until the receiver of `updates` is gone.
    fn run(self: Box<Self>, updates: mpsc::Sender<SourceUpdate>) -> BoxFuture<'static, ()>;
    /// The name of the span that starts a change's trace: what the source
    /// saw (a watch event, a refresh).
    fn event_name(&self) -> &'static str;
}

/// A source as named on the command line: `kubernetes`, `file:PATH` or `http-sd:URL`.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    Kubernetes(kubernetes::KubernetesOptions),
    File(std::path::PathBuf),
    HttpSd(String),
}

impl SourceSpec {
    pub fn parse(text: &str, kubernetes: kubernetes::KubernetesOptions) -> Result<Self, String> {
        if text == "kubernetes" {
            Ok(SourceSpec::Kubernetes(kubernetes))
        } else if let Some(path) = text.strip_prefix("file:") {
            Ok(SourceSpec::File(path.into()))
        } else if let Some(url) = text.strip_prefix("http-sd:") {
            if !url.starts_with("http://") {
                return Err(format!("http-sd:{url}: only http:// URLs are supported"));
            }
            Ok(SourceSpec::HttpSd(url.to_string()))
        } else {
            Err(format!(
                "unknown source '{text}' (expected kubernetes, file:PATH or http-sd:URL)"
            ))
        }
    }

    pub fn build(self, refresh: Duration) -> Box<dyn Source> {
        match self {
            SourceSpec::Kubernetes(options) => Box::new(kubernetes::KubernetesSource::new(options)),
            SourceSpec::File(path) => Box::new(file::FileSource::new(path, refresh)),
            SourceSpec::HttpSd(url) => Box::new(http_sd::HttpSdSource::new(url, refresh)),
        }
    }
}

/// Sends `update` unless it repeats the last one; false once nobody listens.
async fn send_if_new(
    updates: &mpsc::Sender<SourceUpdate>,
    last: &mut Option<SourceUpdate>,
    update: SourceUpdate,
) -> bool {
    if last.as_ref() == Some(&update) {
        return true;
    }
    match &update {
        SourceUpdate::Error(message) => {
            tracing::warn!(error = %message, "discovery source failed; keeping the last good view")
        }
        SourceUpdate::View(view) => {
            tracing::debug!(services = view.len(), "discovery source view changed")
        }
    }
    *last = Some(update.clone());
    updates.send(update).await.is_ok()
}
