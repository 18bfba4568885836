//! Failover ranking: which priority each endpoint's locality gets, relative to
//! the proxy asking. The proxy's own zone first, then its region, then the
//! other clusters in the service's failover order, then everything else.

use std::collections::BTreeMap;

/// Where an endpoint runs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    /// The member cluster (xDS `sub_zone`).
    pub cluster: String,
}

/// Where the proxy asking for routes runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    pub region: String,
    pub zone: String,
    pub cluster: String,
}

/// Why a locality ranks where it does for the proxy asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In the proxy's own zone.
    Zone,
    /// In the proxy's region.
    Region,
    /// The cluster at this index of the failover order.
    Order(usize),
    /// Neither, and not in the failover order: last.
    Rest,
}

/// Where a locality ranks for `origin`: its zone, its region, the failover order, or last.
pub fn placement(origin: &Origin, locality: &Locality, order: &[String]) -> Placement {
    if !origin.zone.is_empty() && locality.zone == origin.zone {
        return Placement::Zone;
    }
    if !origin.region.is_empty() && locality.region == origin.region {
        return Placement::Region;
    }
    match order.iter().position(|c| *c == locality.cluster) {
        Some(i) => Placement::Order(i),
        None => Placement::Rest,
    }
}

/// The rank of a locality: lower is preferred. Ranks are not yet contiguous.
fn rank(origin: &Origin, locality: &Locality, order: &[String]) -> usize {
    match placement(origin, locality, order) {
        Placement::Zone => 0,
        Placement::Region => 1,
        Placement::Order(i) => 2 + i,
        Placement::Rest => 2 + order.len(),
    }
}

/// Groups localities into contiguous priorities 0..n, preferred first.
/// Deterministic: localities within a priority keep their sorted order.
pub fn priorities<'a>(
    origin: &Origin,
    localities: impl IntoIterator<Item = &'a Locality>,
    order: &[String],
) -> Vec<Vec<Locality>> {
    let mut by_rank: BTreeMap<usize, Vec<Locality>> = BTreeMap::new();
    for locality in localities {
        by_rank
            .entry(rank(origin, locality, order))
            .or_default()
            .push(locality.clone());
    }
    by_rank
        .into_values()
        .map(|mut group| {
            group.sort();
            group.dedup();
            group
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn loc(region: &str, zone: &str, cluster: &str) -> Locality {
        Locality {
            region: region.into(),
            zone: zone.into(),
            cluster: cluster.into(),
        }
    }

    #[test]
    fn zone_then_region_then_order_then_rest() {
        let origin = Origin {
            region: "us-east-1".into(),
            zone: "us-east-1a".into(),
            cluster: "east-a".into(),
        };
        let all = [
            loc("eu-west-1", "eu-west-1a", "eu"),
            loc("us-west-2", "us-west-2a", "west"),
            loc("us-east-1", "us-east-1b", "east-b"),
            loc("us-east-1", "us-east-1a", "east-a"),
            loc("ap-south-1", "ap-south-1a", "ap"),
        ];
        let order = vec!["west".to_string(), "eu".to_string()];
        let ranked = priorities(&origin, &all, &order);
        let clusters: Vec<Vec<&str>> = ranked
            .iter()
            .map(|p| p.iter().map(|l| l.cluster.as_str()).collect())
            .collect();
        assert_eq!(
            clusters,
            vec![
                vec!["east-a"],
                vec!["east-b"],
                vec!["west"],
                vec!["eu"],
                vec!["ap"]
            ]
        );
    }

    #[test]
    fn placement_says_why() {
        let origin = Origin {
            region: "us-east-1".into(),
            zone: "us-east-1a".into(),
            cluster: "east-a".into(),
        };
        let order = vec!["west".to_string()];
        let at = |l: Locality| placement(&origin, &l, &order);
        assert_eq!(
            at(loc("us-east-1", "us-east-1a", "east-a")),
            Placement::Zone
        );
        assert_eq!(
            at(loc("us-east-1", "us-east-1b", "east-b")),
            Placement::Region
        );
        assert_eq!(
            at(loc("us-west-2", "us-west-2a", "west")),
            Placement::Order(0)
        );
        assert_eq!(at(loc("eu-west-1", "eu-west-1a", "eu")), Placement::Rest);
    }

    #[test]
    fn empty_ranks_are_skipped() {
        let origin = Origin {
            region: "mars".into(),
            zone: "mars-1".into(),
            cluster: "m".into(),
        };
        let all = [loc("us-west-2", "us-west-2a", "west")];
        assert_eq!(priorities(&origin, &all, &[]).len(), 1);
    }

    fn arb_locality() -> impl Strategy<Value = Locality> {
        ("[ab]", "[ab][12]", "c[0-4]").prop_map(|(r, z, c)| loc(&r, &z, &c))
    }

    proptest! {
        #[test]
        fn every_locality_lands_once_and_the_origin_zone_leads(
            all in proptest::collection::vec(arb_locality(), 0..20),
            order in proptest::collection::vec("c[0-4]", 0..4),
            origin_zone in "[ab][12]",
        ) {
            let origin = Origin { region: origin_zone[..1].to_string(), zone: origin_zone.clone(), cluster: "c0".into() };
            let ranked = priorities(&origin, &all, &order);
            let placed: Vec<&Locality> = ranked.iter().flatten().collect();
            let mut distinct = all.clone();
            distinct.sort();
            distinct.dedup();
            prop_assert_eq!(placed.len(), distinct.len());
            prop_assert!(ranked.iter().all(|p| !p.is_empty()));
            if all.iter().any(|l| l.zone == origin_zone) {
                prop_assert!(ranked[0].iter().all(|l| l.zone == origin_zone));
            }
            prop_assert_eq!(priorities(&origin, &all, &order), ranked);
        }
    }
}
