//! How the CLI prints `explain`: the split, each backend's tiers in
//! failover order with their shares, endpoints and reasons.

use super::{
    output::{print_table, print_value},
    Format,
};
use meridian_proto::v1 as pb;
use serde_json::{json, Value};

fn endpoint_json(e: &pb::ExplainEndpoint) -> Value {
    json!({"address": e.address, "weight": e.weight, "health": e.health})
}

fn tier_json(t: &pb::ExplainTier) -> Value {
    json!({
        "priority": t.priority,
        "sharePercent": t.share_percent,
        "healthPercent": t.health_percent,
        "healthyWeight": t.healthy_weight,
        "totalWeight": t.total_weight,
        "localities": t.localities.iter().map(|l| json!({
            "region": l.region,
            "zone": l.zone,
            "cluster": l.cluster,
            "reason": l.reason,
            "stale": l.stale,
            "endpoints": l.endpoints.iter().map(endpoint_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn explain_json(r: &pb::ExplainResponse) -> Value {
    json!({
        "service": r.service,
        "proxy": {"cluster": r.cluster, "region": r.region, "zone": r.zone},
        "revision": r.revision,
        "controlPlaneNode": r.node_id,
        "splits": r.splits,
        "notes": r.notes,
        "backends": r.backends.iter().map(|b| json!({
            "service": b.service,
            "splitWeight": b.split_weight,
            "splitPercent": b.split_percent,
            "failoverPolicy": (!b.failover_policy.is_empty()).then_some(&b.failover_policy),
            "failoverOrder": b.failover_order,
            "overprovisioningFactor": b.overprovisioning_factor,
            "tiers": b.tiers.iter().map(tier_json).collect::<Vec<_>>(),
            "notes": b.notes,
        })).collect::<Vec<_>>(),
    })
}

fn percent(value: f64) -> String {
    format!("{value:.1}%")
}

pub fn print_explain(r: &pb::ExplainResponse, format: Format) -> anyhow::Result<()> {
    if format != Format::Table {
        return print_value(&explain_json(r), format);
    }
    outln!(
        "{} for a proxy in cluster {} ({}/{}), revision {} on node {}",
        r.service,
        r.cluster,
        r.region,
        r.zone,
        r.revision,
        r.node_id
    );
    if let Some(split) = r.splits.first() {
        let parts: Vec<String> = r
            .backends
            .iter()
            .map(|b| format!("{} {}", b.service, percent(b.split_percent)))
            .collect();
        outln!("split {split}: {}", parts.join(", "));
        if r.splits.len() > 1 {
            outln!("  nesting {}", r.splits[1..].join(", "));
        }
    }
    for note in &r.notes {
        outln!("note: {note}");
    }
    for b in &r.backends {
        outln!();
        outln!(
            "backend {} ({} of the traffic)",
            b.service,
            percent(b.split_percent)
        );
        match b.failover_policy.is_empty() {
            true => outln!(
                "  no failover policy: the proxy's zone, then its region, then the rest; overprovisioning factor {}",
                b.overprovisioning_factor
            ),
            false => outln!(
                "  failover policy {}: {}; overprovisioning factor {}",
                b.failover_policy,
                b.failover_order.join(", "),
                b.overprovisioning_factor
            ),
        }
        let mut rows = vec![[
            "TIER", "SHARE", "HEALTH", "LOCALITY", "WHY", "ENDPOINT", "WEIGHT", "STATE",
        ]
        .map(String::from)
        .to_vec()];
        for t in &b.tiers {
            let mut first_in_tier = true;
            for l in &t.localities {
                let mut first_in_locality = true;
                for e in &l.endpoints {
                    let mut row = vec![String::new(); 5];
                    if first_in_tier {
                        row[0] = t.priority.to_string();
                        row[1] = percent(t.share_percent);
                        row[2] = percent(t.health_percent);
                    }
                    if first_in_locality {
                        row[3] = format!("{} {}/{}", l.cluster, l.region, l.zone);
                        row[4] = l.reason.clone();
                    }
                    let state = match l.stale {
                        true => format!("{}, stale", e.health),
                        false => e.health.clone(),
                    };
                    row.extend([e.address.clone(), e.weight.to_string(), state]);
                    rows.push(row);
                    (first_in_tier, first_in_locality) = (false, false);
                }
            }
        }
        if !b.tiers.is_empty() {
            print_table(&rows);
        }
        for note in &b.notes {
            outln!("note: {note}");
        }
    }
    Ok(())
}
