//! Nested traffic splits: a split's backend may itself be split, and the
//! compiler flattens the chain (weights multiply). A write that would make
//! the chain loop, or nest deeper than `MAX_SPLIT_DEPTH`, is refused.

use crate::{plan::StateView, Kind, Rejection, RejectionCode, Resource, Spec};
use std::collections::{BTreeMap, BTreeSet};

/// Splits of splits, at most this many levels (a split whose backends are
/// plain services is one level).
pub const MAX_SPLIT_DEPTH: usize = 4;

type Service = (String, String);

/// Refuses `resource`, a `TrafficSplit` about to be written, if with it the
/// splits in `view` would form a cycle or nest too deep.
pub fn check_split_nesting(view: &dyn StateView, resource: &Resource) -> Result<(), Rejection> {
    let Spec::TrafficSplit(_) = &resource.spec else {
        return Ok(());
    };
    let key = resource.key();
    let mut graph: BTreeMap<Service, Vec<Service>> = BTreeMap::new();
    let splits = view.list(Kind::TrafficSplit);
    for split in splits
        .iter()
        .filter(|r| r.key() != key)
        .chain(std::iter::once(resource))
    {
        let Spec::TrafficSplit(spec) = &split.spec else {
            continue;
        };
        let namespace = split.metadata.namespace.as_deref().unwrap_or_default();
        if let Ok(mut refs) = spec.validate(namespace) {
            let target = refs.remove(0);
            graph.entry(target).or_default().extend(refs);
        }
    }
    let mut depths = BTreeMap::new();
    for target in graph.keys() {
        depth(&graph, target, &mut Vec::new(), &mut depths)?;
    }
    Ok(())
}

/// The nesting depth below `service` (0 when it is not split), memoised;
/// `path` holds the services being expanded, to find a cycle.
fn depth(
    graph: &BTreeMap<Service, Vec<Service>>,
    service: &Service,
    path: &mut Vec<Service>,
    depths: &mut BTreeMap<Service, usize>,
) -> Result<usize, Rejection> {
    if let Some(known) = depths.get(service) {
        return Ok(*known);
    }
    let Some(backends) = graph.get(service) else {
        return Ok(0);
    };
    if path.contains(service) {
        path.push(service.clone());
        let chain: Vec<String> = path.iter().map(|(ns, n)| format!("{ns}/{n}")).collect();
        return Err(Rejection::new(
            RejectionCode::InvalidArgument,
            format!("traffic splits form a cycle: {}", chain.join(" -> ")),
        ));
    }
    path.push(service.clone());
    let mut deepest = 0;
    let unique: BTreeSet<&Service> = backends.iter().collect();
    for backend in unique {
        deepest = deepest.max(depth(graph, backend, path, depths)?);
    }
    path.pop();
    let own = deepest + 1;
    if own > MAX_SPLIT_DEPTH {
        return Err(Rejection::new(
            RejectionCode::InvalidArgument,
            format!(
                "the split of {}/{} nests {own} splits deep; at most {MAX_SPLIT_DEPTH}",
                service.0, service.1
            ),
        ));
    }
    depths.insert(service.clone(), own);
    Ok(own)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_manifests, plan::tests::MemState};

    fn state_of(splits: Vec<Resource>) -> MemState {
        MemState(splits.into_iter().map(|r| (r.key(), r)).collect())
    }

    fn split(target: &str, backends: &[&str]) -> Resource {
        let backends: Vec<String> = backends
            .iter()
            .map(|b| format!("{{service: {b}, weight: 1}}"))
            .collect();
        let text = format!(
            "kind: TrafficSplit\nmetadata: {{name: {target}, namespace: shop}}\nspec: {{service: {target}, backends: [{}]}}\n",
            backends.join(", ")
        );
        parse_manifests(&text).expect("split").remove(0)
    }

    #[test]
    fn nesting_is_allowed_cycles_and_depth_are_not() {
        let view = state_of(vec![split("mid", &["leaf1", "leaf2"])]);
        assert!(check_split_nesting(&view, &split("top", &["mid", "other"])).is_ok());

        let view = state_of(vec![
            split("top", &["mid", "other"]),
            split("mid", &["leaf"]),
        ]);
        let err = check_split_nesting(&view, &split("leaf", &["top"])).expect_err("cycle");
        assert!(err.to_string().contains("cycle"), "{err}");
        assert_eq!(err.code, RejectionCode::InvalidArgument);

        let chain = state_of(vec![
            split("s1", &["s2"]),
            split("s2", &["s3"]),
            split("s3", &["s4"]),
        ]);
        assert!(check_split_nesting(&chain, &split("s4", &["leaf"])).is_ok());
        let err = check_split_nesting(&chain, &split("s4", &["s5"]))
            .and_then(|_| {
                let deeper = state_of(vec![
                    split("s1", &["s2"]),
                    split("s2", &["s3"]),
                    split("s3", &["s4"]),
                    split("s4", &["s5"]),
                ]);
                check_split_nesting(&deeper, &split("s5", &["leaf"]))
            })
            .expect_err("five deep");
        assert!(err.to_string().contains("at most 4"), "{err}");
    }
}
