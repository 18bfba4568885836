//! What an agent's endpoint sets become: `Endpoints` resources of the
//! agent's cluster, each taken as far as it is valid. An endpoint that is
//! invalid on its own (an address that is no IP, a zone that is no label) is
//! left out and reported, never a reason to refuse the healthy rest or to end
//! the stream, which would only make the agent send the same batch forever.

use meridian_model::{spec::EndpointsSpec, Kind, Manifest, Resource, ResourceKey};
use meridian_proto::v1::EndpointSet;

/// How long a reason kept in a cluster's replicated status may be.
pub const MAX_REASON_LEN: usize = 256;

/// A batch's endpoint sets, cleaned.
#[derive(Debug, Default)]
pub struct Sets {
    /// The sets to write, each without its invalid endpoints.
    pub resources: Vec<Resource>,
    /// Every set the batch named, written or not: a full snapshot keeps
    /// these (a set left out whole keeps its last good version).
    pub named: Vec<ResourceKey>,
    /// Why each endpoint (or set) was left out, `namespace/name: reason`.
    pub left_out: Vec<String>,
}

pub fn endpoint_sets(cluster: &str, sets: Vec<EndpointSet>) -> Sets {
    let mut out = Sets::default();
    for set in sets {
        let id = format!("{}/{}", set.namespace, set.name);
        if let Ok(key) = ResourceKey::new(
            Kind::Endpoints,
            Some(&set.namespace),
            &set.name,
            Some(cluster),
        ) {
            out.named.push(key);
        }
        match endpoint_set(cluster, &set) {
            Ok((resource, reasons)) => {
                out.resources.push(resource);
                out.left_out
                    .extend(reasons.into_iter().map(|r| format!("{id}: {r}")));
            }
            Err(reason) => out.left_out.push(format!("{id}: {reason}")),
        }
    }
    out
}

/// One set as a resource without its invalid endpoints, and why each was left out.
fn endpoint_set(cluster: &str, set: &EndpointSet) -> Result<(Resource, Vec<String>), String> {
    let spec: EndpointsSpec =
        serde_json::from_str(&set.spec_json).map_err(|e| format!("malformed spec: {e}"))?;
    let (spec, reasons) = spec.without_invalid();
    let manifest = Manifest {
        kind: Kind::Endpoints.to_string(),
        metadata: serde_json::json!({"name": set.name, "namespace": set.namespace, "cluster": cluster}),
        spec: serde_json::to_value(&spec).map_err(|e| e.to_string())?,
        status: serde_json::Value::Null,
    };
    let resource = Resource::from_manifest(manifest).map_err(|e| e.to_string())?;
    Ok((resource, reasons))
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub fn truncated(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, spec: &str) -> EndpointSet {
        EndpointSet {
            namespace: "shop".into(),
            name: name.into(),
            spec_json: spec.into(),
        }
    }

    #[test]
    fn invalid_endpoints_are_left_out_and_the_rest_taken() {
        let sets = endpoint_sets(
            "east",
            vec![
                set(
                    "web",
                    r#"{"endpoints": [{"address": "10.0.0.1", "port": 80}, {"address": "10.0.0.2", "port": 80, "zone": "Rack_A"}]}"#,
                ),
                set(
                    "fqdn",
                    r#"{"endpoints": [{"address": "web-0.shop.svc", "port": 80}]}"#,
                ),
                set("broken", "{not json"),
            ],
        );
        let written: Vec<(&str, usize)> = sets
            .resources
            .iter()
            .map(|r| match &r.spec {
                meridian_model::Spec::Endpoints(e) => (r.metadata.name.as_str(), e.endpoints.len()),
                _ => ("?", 0),
            })
            .collect();
        assert_eq!(written, [("web", 1), ("fqdn", 0)]);
        assert_eq!(sets.named.len(), 3, "a set left out whole is still named");
        assert_eq!(sets.left_out.len(), 3, "{:?}", sets.left_out);
        assert!(sets.left_out[0].starts_with("shop/web: spec.endpoints[1].zone"));
        assert!(sets.left_out[2].starts_with("shop/broken: malformed spec"));
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncated("short", 10), "short");
        assert_eq!(truncated("ééé", 3), "é…");
    }
}
