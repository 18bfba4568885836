//! The largest weights xDS can carry (`u32::MAX` for a host and for its
//! locality) pick a host instead of overflowing: the locality's scaled
//! weight overflowed `i64` in `pick`, and a retry's host-times-locality
//! weights overflowed their `u64` total in `pick_avoiding`. Both panicked
//! in a debug build and picked by a wrapped weight in a release build.
//! Found by meridian-proxy's xDS property tests.

use meridian_balance::{Balancer, Host, Locality, PickContext, Policy};

#[test]
fn the_largest_weights_pick_without_overflow() {
    let hosts = (1..=3)
        .map(|n| Host {
            address: format!("10.0.0.{n}:80"),
            weight: u32::MAX,
            healthy: true,
        })
        .collect();
    let locality = Locality {
        priority: 0,
        weight: u32::MAX,
        hosts,
    };
    for policy in [Policy::RoundRobin, Policy::Random, Policy::LeastRequest] {
        let mut balancer = Balancer::new(policy, vec![locality.clone()], 1.4);
        let ctx = PickContext {
            random: [1, 2, 3],
            hash: None,
            in_flight: &|_| 0,
        };
        let first = balancer.pick(&ctx).expect("a host");
        let retry = balancer.pick_avoiding(&ctx, &[first]);
        assert!(retry.is_some_and(|h| h != first), "{policy:?}");
    }
}
