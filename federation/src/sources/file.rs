//! Static file source: YAML endpoint sets, read again when the file changes.
//!
//! ```yaml
//! - service: shop/checkout          # namespace/name, or name in "default"
//!   endpoints:
//!   - {address: 10.0.0.7, port: 8080, weight: 1, zone: us-east-1a, health: healthy}
//! ```

use super::{send_if_new, Source, SourceUpdate};
use crate::{view::normalise, ServiceName, View};
use futures::future::BoxFuture;
use meridian_model::{spec::EndpointsSpec, Kind, ResourceKey};
use serde::Deserialize;
use std::{path::PathBuf, time::Duration};
use tokio::sync::mpsc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    service: String,
    #[serde(default)]
    endpoints: Vec<meridian_model::spec::Endpoint>,
}

/// Parses and validates the file's text into a view.
pub fn parse(text: &str) -> Result<View, String> {
    let entries: Vec<Entry> = match serde_yaml::from_str::<Option<Vec<Entry>>>(text) {
        Ok(entries) => entries.unwrap_or_default(),
        Err(e) => return Err(format!("malformed endpoint file: {e}")),
    };
    let mut view = View::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let (namespace, name) = entry
            .service
            .split_once('/')
            .unwrap_or(("default", entry.service.as_str()));
        ResourceKey::new(Kind::Service, Some(namespace), name, None)
            .map_err(|e| format!("entry {i}: {e}"))?;
        let spec = EndpointsSpec {
            endpoints: entry.endpoints,
        };
        spec.validate()
            .map_err(|e| format!("entry {i} ({}): {e}", entry.service))?;
        if view
            .insert(ServiceName::new(namespace, name), normalise(spec.endpoints))
            .is_some()
        {
            return Err(format!(
                "entry {i}: service {} is listed twice",
                entry.service
            ));
        }
    }
    Ok(view)
}

pub struct FileSource {
    path: PathBuf,
    interval: Duration,
}

impl FileSource {
    pub fn new(path: PathBuf, interval: Duration) -> Self {
        FileSource { path, interval }
    }
}

impl Source for FileSource {
    fn event_name(&self) -> &'static str {
        "source.file.refresh"
    }

    fn run(self: Box<Self>, updates: mpsc::Sender<SourceUpdate>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut last = None;
            let mut last_text: Option<String> = None;
            loop {
                let update = match tokio::fs::read_to_string(&self.path).await {
                    Ok(text) if last_text.as_ref() == Some(&text) => None,
                    Ok(text) => {
                        let parsed = parse(&text);
                        last_text = Some(text);
                        Some(match parsed {
                            Ok(view) => SourceUpdate::View(view),
                            Err(e) => SourceUpdate::Error(format!("{}: {e}", self.path.display())),
                        })
                    }
                    Err(e) => {
                        last_text = None;
                        Some(SourceUpdate::Error(format!(
                            "reading {}: {e}",
                            self.path.display()
                        )))
                    }
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
    fn parses_and_validates() {
        let view = parse("- service: shop/checkout\n  endpoints:\n  - {address: 10.0.0.8, port: 80}\n  - {address: 10.0.0.7, port: 80, health: draining}\n- service: cart\n").expect("valid");
        let checkout = &view[&ServiceName::new("shop", "checkout")];
        assert_eq!(checkout[0].address, "10.0.0.7", "sorted");
        assert!(view[&ServiceName::new("default", "cart")].is_empty());
        assert!(parse("").expect("empty file").is_empty());
        for bad in [
            "- service: Bad_Name\n",
            "- service: a\n  endpoints: [{address: nope, port: 80}]\n",
            "- service: a\n- service: a\n",
            "{not: a list}",
            "- service: a\n  colour: blue\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
