//! How the CLI prints resources, members and status: table, YAML or JSON
//! (proxies in `proxies.rs`, explanations in `explain.rs`).

use super::Format;
use anyhow::Context;
use meridian_model::{spec::Health, Kind, Resource, ResourceKey, Spec};
use meridian_proto::v1 as pb;
use serde_json::{json, Value};

pub fn describe(key: &ResourceKey) -> String {
    let mut text = format!("{}/", key.kind);
    if !key.namespace.is_empty() {
        text.push_str(&format!("{}/", key.namespace));
    }
    text.push_str(&key.name);
    if !key.cluster.is_empty() {
        text.push_str(&format!(" (cluster {})", key.cluster));
    }
    text
}

fn parse(item: &pb::Resource) -> anyhow::Result<Resource> {
    serde_json::from_str(&item.manifest_json)
        .context("the server sent a resource that does not parse")
}

fn manifest_value(item: &pb::Resource) -> anyhow::Result<Value> {
    serde_json::from_str(&item.manifest_json)
        .context("the server sent a resource that does not parse")
}

pub(super) fn print_value(value: &Value, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(value)?),
        _ => out!("{}", serde_yaml::to_string(value)?),
    }
    Ok(())
}

pub fn print_one(kind: Kind, item: &pb::Resource, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Table => print_list(kind, std::slice::from_ref(item), format),
        _ => print_value(&manifest_value(item)?, format),
    }
}

pub fn print_list(kind: Kind, items: &[pb::Resource], format: Format) -> anyhow::Result<()> {
    if format != Format::Table {
        let items = items
            .iter()
            .map(manifest_value)
            .collect::<anyhow::Result<Vec<_>>>()?;
        return print_value(&json!({ "items": items }), format);
    }
    let header = match kind {
        Kind::Cluster => vec![
            "NAME",
            "REGION",
            "ZONE",
            "AGENT",
            "STALE",
            "SOURCE-ERROR",
            "REVISION",
        ],
        Kind::Service => vec!["NAMESPACE", "NAME", "PROTOCOL", "PORT", "LB", "REVISION"],
        Kind::Endpoints => vec![
            "NAMESPACE",
            "NAME",
            "CLUSTER",
            "HEALTHY",
            "TOTAL",
            "REVISION",
        ],
        Kind::TrafficSplit => vec!["NAMESPACE", "NAME", "SERVICE", "BACKENDS", "REVISION"],
        Kind::FailoverPolicy => vec!["NAMESPACE", "NAME", "SERVICE", "ORDER", "REVISION"],
        Kind::BootstrapToken => vec![
            "NAME", "ROLE", "CLUSTER", "USED", "EXPIRES", "REVOKED", "REVISION",
        ],
    };
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for item in items {
        rows.push(row(&parse(item)?));
    }
    print_table(&rows);
    Ok(())
}

fn row(resource: &Resource) -> Vec<String> {
    let meta = &resource.metadata;
    let namespace = meta.namespace.clone().unwrap_or_default();
    let revision = resource.revision().to_string();
    let status = resource.status.as_ref();
    let stale = if status.is_some_and(|s| s.stale) {
        "stale"
    } else {
        ""
    }
    .to_string();
    match &resource.spec {
        Spec::Cluster(s) => vec![
            meta.name.clone(),
            s.region.clone(),
            s.zone.clone().unwrap_or_default(),
            status.and_then(|s| s.agent.clone()).unwrap_or_default(),
            stale,
            status
                .and_then(|s| s.source_error.clone())
                .unwrap_or_default(),
            revision,
        ],
        Spec::Service(s) => vec![
            namespace,
            meta.name.clone(),
            to_text(&s.protocol),
            s.port.to_string(),
            to_text(&s.lb),
            revision,
        ],
        Spec::Endpoints(s) => vec![
            namespace,
            meta.name.clone(),
            meta.cluster.clone().unwrap_or_default(),
            s.endpoints
                .iter()
                .filter(|e| e.health == Health::Healthy)
                .count()
                .to_string(),
            s.endpoints.len().to_string(),
            stale,
            revision,
        ],
        Spec::TrafficSplit(s) => vec![
            namespace,
            meta.name.clone(),
            s.service.clone(),
            s.backends
                .iter()
                .map(|b| format!("{}={}", b.service, b.weight))
                .collect::<Vec<_>>()
                .join(","),
            revision,
        ],
        Spec::FailoverPolicy(s) => vec![
            namespace,
            meta.name.clone(),
            s.service.clone(),
            s.order.join(","),
            revision,
        ],
        Spec::BootstrapToken(s) => vec![
            meta.name.clone(),
            to_text(&s.role),
            s.cluster.clone().unwrap_or_default(),
            format!("{}/{}", s.used, s.max_uses),
            s.expires_at.to_string(),
            s.revoked.to_string(),
            revision,
        ],
    }
}

/// The serde name of an enum value, e.g. `least_request`.
fn to_text<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

pub(super) fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<width$}", width = widths[c]))
            .collect();
        outln!("{}", line.join("   ").trim_end());
    }
}

fn members_json(members: &[pb::Member]) -> Value {
    Value::Array(
        members
            .iter()
            .map(|m| json!({"nodeId": m.node_id, "addr": m.addr, "role": m.role, "leader": m.leader}))
            .collect(),
    )
}

pub fn print_members(members: &[pb::Member], format: Format) -> anyhow::Result<()> {
    if format != Format::Table {
        return print_value(&json!({ "items": members_json(members) }), format);
    }
    let mut rows = vec![vec![
        "ID".to_string(),
        "ADDRESS".into(),
        "ROLE".into(),
        "LEADER".into(),
    ]];
    for m in members {
        rows.push(vec![
            m.node_id.to_string(),
            m.addr.clone(),
            m.role.clone(),
            if m.leader { "*".into() } else { String::new() },
        ]);
    }
    print_table(&rows);
    Ok(())
}

pub fn print_status(status: &pb::StatusResponse, format: Format) -> anyhow::Result<()> {
    let value = json!({
        "nodeId": status.node_id,
        "state": status.state,
        "leader": status.leader,
        "term": status.term,
        "commitIndex": status.commit_index,
        "appliedIndex": status.applied_index,
        "lastLogIndex": status.last_log_index,
        "snapshotIndex": status.snapshot_index,
        "purgedIndex": status.purged_index,
        "members": members_json(&status.members),
        "bootstrapped": status.bootstrapped,
    });
    if format != Format::Table {
        return print_value(&value, format);
    }
    let leader = status
        .leader
        .map(|l| l.to_string())
        .unwrap_or_else(|| "none".into());
    outln!("node:      {} ({})", status.node_id, status.state);
    outln!("leader:    {leader}");
    outln!("term:      {}", status.term);
    outln!("committed: {}", status.commit_index);
    outln!("applied:   {}", status.applied_index);
    outln!(
        "log:       last {}, snapshot {}, purged {}",
        status.last_log_index,
        status.snapshot_index,
        status.purged_index
    );
    // The nodes recorded as having held the cluster's data (none may come
    // back with an empty data dir under the same id).
    let bootstrapped: Vec<String> = status.bootstrapped.iter().map(u64::to_string).collect();
    match bootstrapped.is_empty() {
        true => outln!("held data: none recorded"),
        false => outln!("held data: {}", bootstrapped.join(", ")),
    }
    outln!();
    print_members(&status.members, Format::Table)
}
