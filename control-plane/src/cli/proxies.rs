//! How the CLI prints where proxies stand: `get proxies` and `status
//! --propagation REVISION`, as a table, YAML or JSON.

use super::{
    output::{print_table, print_value},
    Format,
};
use meridian_proto::v1 as pb;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// `cds`, `eds`, `lds`, `rds`, or the message name of another type.
fn short_type(type_url: &str) -> &str {
    match type_url.rsplit('.').next().unwrap_or(type_url) {
        "Cluster" => "cds",
        "ClusterLoadAssignment" => "eds",
        "Listener" => "lds",
        "RouteConfiguration" => "rds",
        other => other,
    }
}

/// A duration in milliseconds as `850ms`, `3.2s`, `4m05s` or `2h10m`.
fn age(ms: u64) -> String {
    let seconds = ms / 1000;
    match seconds {
        0 => format!("{ms}ms"),
        1..60 => format!("{:.1}s", ms as f64 / 1000.0),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

fn type_json(t: &pb::ProxyTypeStatus) -> Value {
    json!({
        "sentVersion": t.sent_version,
        "sentRevision": t.sent_revision,
        "ackedVersion": t.acked_version,
        "ackedRevision": t.acked_revision,
        "behindSeconds": (t.behind_since_unix_ms > 0).then(|| t.behind_ms as f64 / 1000.0),
        "behindSinceUnixMs": (t.behind_since_unix_ms > 0).then_some(t.behind_since_unix_ms),
        "rejected": t.rejected,
        "lastNack": if t.nack_error.is_empty() && t.nack_version.is_empty() { Value::Null } else {
            json!({"version": t.nack_version, "error": t.nack_error, "unixMs": t.nack_unix_ms})
        },
    })
}

fn proxy_json(p: &pb::Proxy) -> Value {
    let types: BTreeMap<String, Value> = p
        .types
        .iter()
        .map(|t| (short_type(&t.type_url).to_string(), type_json(t)))
        .collect();
    json!({
        "nodeId": p.node_id,
        "cluster": p.cluster,
        "region": p.region,
        "zone": p.zone,
        "controlPlaneNode": p.control_plane_node,
        "protocol": p.protocol,
        "identity": p.identity,
        "connectedUnixSeconds": p.connected_unix_seconds,
        "revision": p.revision,
        "types": types,
        "ackedVersions": p.acked_versions.iter().map(|(t, v)| (short_type(t).to_string(), v.clone())).collect::<BTreeMap<_, _>>(),
        "lastNack": if p.last_nack_error.is_empty() { Value::Null } else {
            json!({"type": short_type(&p.last_nack_type_url), "version": p.last_nack_version, "error": p.last_nack_error})
        },
    })
}

fn nack_text(t: &pb::ProxyTypeStatus) -> String {
    match t.nack_error.is_empty() && t.nack_version.is_empty() {
        true => String::new(),
        false => format!("{}: {}", t.nack_version, t.nack_error),
    }
}

fn warn_unreachable(nodes: &[u64]) {
    if !nodes.is_empty() {
        eprintln!(
            "warning: control-plane nodes {nodes:?} did not answer; their proxies are not listed"
        );
    }
}

pub fn print_proxies(reply: &pb::ListProxiesResponse, format: Format) -> anyhow::Result<()> {
    if format != Format::Table {
        let items: Vec<Value> = reply.proxies.iter().map(proxy_json).collect();
        return print_value(
            &json!({ "items": items, "unreachableNodes": reply.unreachable_nodes }),
            format,
        );
    }
    let mut rows = vec![[
        "PROXY",
        "CONTROL-PLANE",
        "CLUSTER",
        "LOCALITY",
        "PROTOCOL",
        "REVISION",
        "TYPE",
        "SENT",
        "ACKED",
        "BEHIND",
        "IDENTITY",
        "LAST-NACK",
    ]
    .map(String::from)
    .to_vec()];
    for p in &reply.proxies {
        let mut first = vec![
            p.node_id.clone(),
            p.control_plane_node.to_string(),
            p.cluster.clone(),
            format!("{}/{}", p.region, p.zone),
            p.protocol.clone(),
            p.revision.to_string(),
        ];
        let identity = if p.identity.is_empty() {
            "-"
        } else {
            &p.identity
        };
        if p.types.is_empty() {
            first.extend(["", "", "", "", identity, ""].map(String::from));
            rows.push(first);
            continue;
        }
        for (i, t) in p.types.iter().enumerate() {
            let mut row = match i {
                0 => first.clone(),
                _ => vec![String::new(); first.len()],
            };
            row.extend([
                short_type(&t.type_url).to_string(),
                t.sent_version.clone(),
                t.acked_version.clone(),
                match (t.behind_since_unix_ms, t.rejected) {
                    (0, _) => String::new(),
                    (_, true) => format!("{} (rejected)", age(t.behind_ms)),
                    _ => age(t.behind_ms),
                },
                if i == 0 {
                    identity.to_string()
                } else {
                    String::new()
                },
                nack_text(t),
            ]);
            rows.push(row);
        }
    }
    print_table(&rows);
    warn_unreachable(&reply.unreachable_nodes);
    Ok(())
}

/// Why a proxy does not hold `revision`, type by type.
fn why_not(p: &pb::Proxy, revision: u64) -> String {
    p.types
        .iter()
        .filter(|t| t.acked_revision < revision)
        .map(|t| {
            let name = short_type(&t.type_url);
            match (t.rejected, t.behind_since_unix_ms) {
                (true, _) => format!("{name} {}", nack_text(t)),
                (false, 0) => format!(
                    "{name} in step at {}, its node not yet at {revision}",
                    t.acked_revision
                ),
                (false, _) => format!(
                    "{name} sent {} {} ago, not ACKed",
                    t.sent_version,
                    age(t.behind_ms)
                ),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn print_propagation(reply: &pb::PropagationResponse, format: Format) -> anyhow::Result<()> {
    if format != Format::Table {
        let list = |proxies: &[pb::Proxy]| proxies.iter().map(proxy_json).collect::<Vec<_>>();
        return print_value(
            &json!({
                "revision": reply.revision,
                "holding": list(&reply.holding),
                "pending": list(&reply.pending),
                "rejected": list(&reply.rejected),
                "unreachableNodes": reply.unreachable_nodes,
            }),
            format,
        );
    }
    let total = reply.holding.len() + reply.pending.len() + reply.rejected.len();
    outln!(
        "revision {}: {} of {total} proxies hold it, {} not yet, {} rejected it",
        reply.revision,
        reply.holding.len(),
        reply.pending.len(),
        reply.rejected.len()
    );
    let mut rows = vec![[
        "STATE",
        "PROXY",
        "CONTROL-PLANE",
        "CLUSTER",
        "REVISION",
        "WHY",
    ]
    .map(String::from)
    .to_vec()];
    for (state, proxies) in [
        ("holds", &reply.holding),
        ("not yet", &reply.pending),
        ("rejected", &reply.rejected),
    ] {
        for p in proxies {
            rows.push(vec![
                state.to_string(),
                p.node_id.clone(),
                p.control_plane_node.to_string(),
                p.cluster.clone(),
                p.revision.to_string(),
                match state {
                    "holds" => String::new(),
                    _ => why_not(p, reply.revision),
                },
            ]);
        }
    }
    if total > 0 {
        outln!();
        print_table(&rows);
    }
    warn_unreachable(&reply.unreachable_nodes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age(850), "850ms");
        assert_eq!(age(3_250), "3.2s");
        assert_eq!(age(245_000), "4m05s");
        assert_eq!(age(7_800_000), "2h10m");
    }

    #[test]
    fn a_pending_proxy_says_which_type_waits_and_since_when() {
        let proxy = pb::Proxy {
            types: vec![
                pb::ProxyTypeStatus {
                    type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
                    sent_version: "9-ab".into(),
                    acked_revision: 7,
                    behind_since_unix_ms: 1,
                    behind_ms: 3_100,
                    ..Default::default()
                },
                pb::ProxyTypeStatus {
                    type_url: "type.googleapis.com/envoy.config.listener.v3.Listener".into(),
                    acked_revision: 9,
                    ..Default::default()
                },
                pb::ProxyTypeStatus {
                    type_url: "type.googleapis.com/envoy.config.route.v3.RouteConfiguration".into(),
                    acked_revision: 7,
                    rejected: true,
                    nack_version: "9-cd".into(),
                    nack_error: "unknown cluster".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            why_not(&proxy, 9),
            "cds sent 9-ab 3.1s ago, not ACKed; rds 9-cd: unknown cluster"
        );
    }
}
