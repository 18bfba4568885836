//! A cluster's endpoint sets and the difference between two of them. Pure.

use meridian_model::spec::Endpoint;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
}

impl ServiceName {
    pub fn new(namespace: &str, name: &str) -> Self {
        ServiceName {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

/// Every endpoint set a source sees in its cluster, endpoints sorted by address and port.
pub type View = BTreeMap<ServiceName, Vec<Endpoint>>;

/// Sorts a set's endpoints so equal sets compare equal.
pub fn normalise(mut endpoints: Vec<Endpoint>) -> Vec<Endpoint> {
    endpoints.sort_by(|a, b| (&a.address, a.port).cmp(&(&b.address, b.port)));
    endpoints.dedup_by(|a, b| a.address == b.address && a.port == b.port);
    endpoints
}

/// What turns one view into another.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delta {
    pub upserts: Vec<(ServiceName, Vec<Endpoint>)>,
    pub removals: Vec<ServiceName>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }

    pub fn apply(&self, view: &mut View) {
        for name in &self.removals {
            view.remove(name);
        }
        for (name, endpoints) in &self.upserts {
            view.insert(name.clone(), endpoints.clone());
        }
    }
}

pub fn diff(old: &View, new: &View) -> Delta {
    Delta {
        upserts: new
            .iter()
            .filter(|(name, endpoints)| old.get(*name) != Some(endpoints))
            .map(|(name, endpoints)| (name.clone(), endpoints.clone()))
            .collect(),
        removals: old
            .keys()
            .filter(|name| !new.contains_key(*name))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_model::spec::Health;
    use proptest::prelude::*;

    fn endpoint(host: u8, port: u16) -> Endpoint {
        Endpoint {
            address: format!("10.0.0.{host}"),
            port,
            weight: 1,
            zone: None,
            health: Health::Healthy,
        }
    }

    fn arb_view() -> impl Strategy<Value = View> {
        proptest::collection::btree_map(
            (0u8..4).prop_map(|n| ServiceName::new("ns", &format!("s{n}"))),
            proptest::collection::vec((0u8..4, 80u16..82), 0..4)
                .prop_map(|eps| normalise(eps.into_iter().map(|(h, p)| endpoint(h, p)).collect())),
            0..4,
        )
    }

    proptest! {
        #[test]
        fn applying_the_diff_gives_the_new_view(old in arb_view(), new in arb_view()) {
            let delta = diff(&old, &new);
            let mut patched = old.clone();
            delta.apply(&mut patched);
            prop_assert_eq!(&patched, &new);
            prop_assert_eq!(delta.is_empty(), old == new);
        }
    }
}
