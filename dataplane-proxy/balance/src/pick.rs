//! The balancer: a priority by load, a locality by weight, a host by policy.

use crate::{maglev::Maglev, priority::priority_loads, ring::Ring};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// `ip:port`; also the host's key on hash rings.
    pub address: String,
    pub weight: u32,
    pub healthy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locality {
    pub priority: u32,
    pub weight: u32,
    pub hosts: Vec<Host>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Smooth weighted round robin (as nginx); plain round robin when weights are equal.
    RoundRobin,
    Random,
    /// Power of two choices on in-flight requests.
    LeastRequest,
    RingHash,
    Maglev,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostId {
    pub locality: usize,
    pub host: usize,
}

/// What a pick needs from the outside world.
pub struct PickContext<'a> {
    /// Uniform random numbers (the caller's RNG; tests seed it).
    pub random: [u64; 3],
    /// The request's hash key (source IP or a header) for the hash policies.
    pub hash: Option<u64>,
    /// Requests in flight to a host, for least request.
    pub in_flight: &'a dyn Fn(HostId) -> u32,
}

enum HashTable {
    Ring(Ring),
    Maglev(Maglev),
}

/// One priority level, derived from the localities and their health.
struct Level {
    localities: Vec<usize>,
    /// Hash policies: the table over the level's healthy hosts, and who is who.
    table: Option<(HashTable, Vec<HostId>)>,
    /// Smooth WRR state over localities.
    locality_current: Vec<i64>,
    /// Each locality's weight scaled by its healthy share, as of the last
    /// rebuild (health changes rebuild): a pick allocates nothing.
    locality_weights: Vec<u64>,
}

pub struct Balancer {
    policy: Policy,
    localities: Vec<Locality>,
    overprovisioning: f64,
    loads: Vec<f64>,
    levels: Vec<Level>,
    /// Smooth WRR state per host.
    current: Vec<Vec<i64>>,
    /// Each host's weight, 0 when unhealthy, per locality (rebuilt with health).
    host_weights: Vec<Vec<u64>>,
}

fn healthy_weight(locality: &Locality) -> u64 {
    locality
        .hosts
        .iter()
        .filter(|h| h.healthy && h.weight > 0)
        .map(|h| u64::from(h.weight))
        .sum()
}

fn total_weight(locality: &Locality) -> u64 {
    locality
        .hosts
        .iter()
        .filter(|h| h.weight > 0)
        .map(|h| u64::from(h.weight))
        .sum()
}

/// A locality's weight times 1,000, scaled by its healthy share.
fn scaled_locality_weight(locality: &Locality) -> u64 {
    let total = total_weight(locality);
    if total == 0 {
        return 0;
    }
    // At most the locality's weight times 1,000, but the product before
    // the division does not fit an i64 for large weights.
    let scaled = u128::from(locality.weight.max(1)) * 1_000 * u128::from(healthy_weight(locality))
        / u128::from(total);
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

/// Smooth weighted round robin: add each weight, take the largest, subtract
/// the total. Weights are host weights (`u32`) or locality weights times
/// 1,000: their sum fits an `i64`.
fn smooth_pick(current: &mut [i64], weights: &[u64]) -> Option<usize> {
    let weights = weights
        .iter()
        .map(|&w| i64::try_from(w).unwrap_or(i64::MAX));
    let total: i64 = weights.clone().fold(0i64, |sum, w| sum.saturating_add(w));
    if total <= 0 {
        return None;
    }
    let mut best: Option<usize> = None;
    for (i, w) in weights.enumerate() {
        if w <= 0 {
            continue;
        }
        current[i] += w;
        if best.is_none_or(|b| current[i] > current[b]) {
            best = Some(i);
        }
    }
    let chosen = best?;
    current[chosen] -= total;
    Some(chosen)
}

/// A weighted random index. The total is a `u128`: a retry's weights (a
/// host's times its locality's) can each come close to `u64::MAX`.
fn weighted_random(weights: &[u64], random: u64) -> Option<usize> {
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    if total == 0 {
        return None;
    }
    let mut point = u128::from(random) % total;
    for (i, &w) in weights.iter().enumerate() {
        if point < u128::from(w) {
            return Some(i);
        }
        point -= u128::from(w);
    }
    None
}

impl Balancer {
    pub fn new(policy: Policy, localities: Vec<Locality>, overprovisioning: f64) -> Self {
        let current = localities.iter().map(|l| vec![0; l.hosts.len()]).collect();
        let mut balancer = Balancer {
            policy,
            localities,
            overprovisioning,
            loads: Vec::new(),
            levels: Vec::new(),
            current,
            host_weights: Vec::new(),
        };
        balancer.rebuild();
        balancer
    }

    pub fn host(&self, id: HostId) -> Option<&Host> {
        self.localities.get(id.locality)?.hosts.get(id.host)
    }

    pub fn localities(&self) -> &[Locality] {
        &self.localities
    }

    /// Every host, with its id.
    pub fn hosts(&self) -> impl Iterator<Item = (HostId, &Host)> {
        self.localities.iter().enumerate().flat_map(|(l, loc)| {
            loc.hosts.iter().enumerate().map(move |(h, host)| {
                (
                    HostId {
                        locality: l,
                        host: h,
                    },
                    host,
                )
            })
        })
    }

    /// Marks a host up or down (health checks, outlier ejection) and recomputes loads.
    pub fn set_healthy(&mut self, id: HostId, healthy: bool) {
        let Some(host) = self
            .localities
            .get_mut(id.locality)
            .and_then(|l| l.hosts.get_mut(id.host))
        else {
            return;
        };
        if host.healthy != healthy {
            host.healthy = healthy;
            self.rebuild();
        }
    }

    /// The share of traffic per priority, in percent.
    pub fn loads(&self) -> &[f64] {
        &self.loads
    }

    fn rebuild(&mut self) {
        let max_priority = self
            .localities
            .iter()
            .map(|l| l.priority)
            .max()
            .unwrap_or(0) as usize;
        let mut levels: Vec<Level> = (0..=max_priority)
            .map(|_| Level {
                localities: Vec::new(),
                table: None,
                locality_current: Vec::new(),
                locality_weights: Vec::new(),
            })
            .collect();
        for (i, locality) in self.localities.iter().enumerate() {
            levels[locality.priority as usize].localities.push(i);
        }
        let weights: Vec<(u64, u64)> = levels
            .iter()
            .map(|level| {
                let healthy = level
                    .localities
                    .iter()
                    .map(|&i| healthy_weight(&self.localities[i]))
                    .sum();
                let total = level
                    .localities
                    .iter()
                    .map(|&i| total_weight(&self.localities[i]))
                    .sum();
                (healthy, total)
            })
            .collect();
        self.loads = priority_loads(&weights, self.overprovisioning);
        self.host_weights = self
            .localities
            .iter()
            .map(|l| {
                l.hosts
                    .iter()
                    .map(|h| if h.healthy { u64::from(h.weight) } else { 0 })
                    .collect()
            })
            .collect();
        for level in &mut levels {
            level.locality_current = vec![0; level.localities.len()];
            level.locality_weights = level
                .localities
                .iter()
                .map(|&l| scaled_locality_weight(&self.localities[l]))
                .collect();
            if matches!(self.policy, Policy::RingHash | Policy::Maglev) {
                let mut ids = Vec::new();
                let mut keys = Vec::new();
                for &l in &level.localities {
                    for (h, host) in self.localities[l].hosts.iter().enumerate() {
                        if host.healthy && host.weight > 0 {
                            ids.push(HostId {
                                locality: l,
                                host: h,
                            });
                            keys.push((host.address.clone(), host.weight));
                        }
                    }
                }
                let table = match self.policy {
                    Policy::Maglev => HashTable::Maglev(Maglev::new(&keys)),
                    _ => HashTable::Ring(Ring::new(&keys)),
                };
                level.table = Some((table, ids));
            }
        }
        self.levels = levels;
    }

    /// Chooses a host, or `None` when no host is healthy.
    pub fn pick(&mut self, ctx: &PickContext<'_>) -> Option<HostId> {
        let priority = choose_priority(&self.loads, ctx.random[0])?;
        let level = &mut self.levels[priority];
        if let Some((table, ids)) = &level.table {
            let hash = ctx.hash.unwrap_or(ctx.random[1]);
            let index = match table {
                HashTable::Ring(ring) => ring.pick(hash),
                HashTable::Maglev(maglev) => maglev.pick(hash),
            }?;
            return ids.get(index).copied();
        }
        // A locality by weight, scaled by its healthy share.
        let chosen = smooth_pick(&mut level.locality_current, &level.locality_weights)?;
        let l = level.localities[chosen];
        let weights = &self.host_weights[l];
        let host = match self.policy {
            Policy::RoundRobin | Policy::RingHash | Policy::Maglev => {
                smooth_pick(&mut self.current[l], weights)?
            }
            Policy::Random => weighted_random(weights, ctx.random[1])?,
            Policy::LeastRequest => {
                let a = weighted_random(weights, ctx.random[1])?;
                let b = weighted_random(weights, ctx.random[2])?;
                let load = |h: usize| {
                    (ctx.in_flight)(HostId {
                        locality: l,
                        host: h,
                    })
                };
                if load(b) < load(a) {
                    b
                } else {
                    a
                }
            }
        };
        Some(HostId { locality: l, host })
    }

    /// A host for a retry: as `pick`, but none of `avoid` (the hosts this
    /// request already failed on), so a retry goes to another host of the
    /// same priority while one is left, and spills to the next priority as
    /// the current one runs out: Envoy's previous_hosts and
    /// previous_priorities retry plugins in one. Weighted random within the
    /// priority; the hash policies rehash too, since the hashed host failed.
    pub fn pick_avoiding(&mut self, ctx: &PickContext<'_>, avoid: &[HostId]) -> Option<HostId> {
        if avoid.is_empty() {
            return self.pick(ctx);
        }
        let usable = |id: HostId, host: &Host| host.healthy && !avoid.contains(&id);
        let mut levels = vec![(0u64, 0u64); self.levels.len()];
        let mut candidates: Vec<(HostId, u32, u64)> = Vec::new();
        for (id, host) in self.hosts() {
            let locality = &self.localities[id.locality];
            let weight = u64::from(host.weight);
            let level = &mut levels[locality.priority as usize];
            level.1 += weight;
            if usable(id, host) && weight > 0 {
                level.0 += weight;
                candidates.push((
                    id,
                    locality.priority,
                    weight * u64::from(locality.weight.max(1)),
                ));
            }
        }
        let loads = priority_loads(&levels, self.overprovisioning);
        let priority = choose_priority(&loads, ctx.random[0])? as u32;
        candidates.retain(|(_, p, _)| *p == priority);
        let weights: Vec<u64> = candidates.iter().map(|(_, _, w)| *w).collect();
        let chosen = weighted_random(&weights, ctx.random[1])?;
        Some(candidates[chosen].0)
    }
}

/// The priority a uniform random number falls in, by the priorities' loads (percent).
fn choose_priority(loads: &[f64], random: u64) -> Option<usize> {
    let percent = (random % 10_000) as f64 / 100.0;
    let mut cumulative = 0.0;
    loads.iter().position(|load| {
        cumulative += load;
        *load > 0.0 && percent < cumulative
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash64;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn host(n: u8, weight: u32) -> Host {
        Host {
            address: format!("10.0.0.{n}:80"),
            weight,
            healthy: true,
        }
    }

    fn one_locality(hosts: Vec<Host>) -> Vec<Locality> {
        vec![Locality {
            priority: 0,
            weight: 1,
            hosts,
        }]
    }

    /// A small seeded generator for the tests' random numbers.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            hash64(&self.0.to_le_bytes())
        }
        fn three(&mut self) -> [u64; 3] {
            [self.next(), self.next(), self.next()]
        }
    }

    fn shares(
        balancer: &mut Balancer,
        picks: usize,
        seed: u64,
        in_flight: &dyn Fn(HostId) -> u32,
    ) -> HashMap<String, usize> {
        let mut rng = Rng(seed);
        let mut counts = HashMap::new();
        for _ in 0..picks {
            let ctx = PickContext {
                random: rng.three(),
                hash: None,
                in_flight,
            };
            let id = balancer.pick(&ctx).expect("a host");
            *counts
                .entry(balancer.host(id).expect("host").address.clone())
                .or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn weights_one_to_three_give_a_quarter() {
        for policy in [Policy::RoundRobin, Policy::Random, Policy::LeastRequest] {
            let mut balancer =
                Balancer::new(policy, one_locality(vec![host(1, 1), host(2, 3)]), 1.4);
            let counts = shares(&mut balancer, 4_000, 7, &|_| 0);
            let share = counts["10.0.0.1:80"] as f64 / 4_000.0;
            assert!((share - 0.25).abs() <= 0.03, "{policy:?}: {share}");
        }
    }

    #[test]
    fn least_request_prefers_the_idle_host() {
        let mut balancer = Balancer::new(
            Policy::LeastRequest,
            one_locality(vec![host(1, 1), host(2, 1)]),
            1.4,
        );
        let busy = |id: HostId| if id.host == 0 { 10 } else { 0 };
        let counts = shares(&mut balancer, 1_000, 3, &busy);
        assert!(counts["10.0.0.2:80"] > 700, "{counts:?}");
    }

    #[test]
    fn unhealthy_priority_spills_over() {
        let mut localities = one_locality(vec![host(1, 1), host(2, 1)]);
        localities.push(Locality {
            priority: 1,
            weight: 1,
            hosts: vec![host(9, 1)],
        });
        let mut balancer = Balancer::new(Policy::RoundRobin, localities, 1.4);
        assert_eq!(
            shares(&mut balancer, 100, 1, &|_| 0).get("10.0.0.9:80"),
            None
        );
        balancer.set_healthy(
            HostId {
                locality: 0,
                host: 0,
            },
            false,
        );
        // 50% healthy x 1.4 = 70% stays.
        let counts = shares(&mut balancer, 4_000, 2, &|_| 0);
        let spilled = counts["10.0.0.9:80"] as f64 / 4_000.0;
        assert!((spilled - 0.30).abs() < 0.03, "{spilled}");
        balancer.set_healthy(
            HostId {
                locality: 0,
                host: 1,
            },
            false,
        );
        assert_eq!(shares(&mut balancer, 100, 3, &|_| 0)["10.0.0.9:80"], 100);
        balancer.set_healthy(
            HostId {
                locality: 1,
                host: 0,
            },
            false,
        );
        assert!(balancer
            .pick(&PickContext {
                random: [1, 2, 3],
                hash: None,
                in_flight: &|_| 0
            })
            .is_none());
    }

    #[test]
    fn a_retry_avoids_failed_hosts_then_moves_to_the_next_priority() {
        let mut localities = one_locality(vec![host(1, 1), host(2, 1)]);
        localities.push(Locality {
            priority: 1,
            weight: 1,
            hosts: vec![host(9, 1)],
        });
        for policy in [Policy::RoundRobin, Policy::LeastRequest, Policy::RingHash] {
            let mut balancer = Balancer::new(policy, localities.clone(), 1.4);
            let first = HostId {
                locality: 0,
                host: 0,
            };
            let second = HostId {
                locality: 0,
                host: 1,
            };
            let mut rng = Rng(11);
            for _ in 0..200 {
                let ctx = PickContext {
                    random: rng.three(),
                    hash: Some(42),
                    in_flight: &|_| 0,
                };
                let retry = balancer.pick_avoiding(&ctx, &[first]).expect("a host");
                assert_ne!(retry, first, "{policy:?}");
                let last = balancer
                    .pick_avoiding(&ctx, &[first, second])
                    .expect("the next priority");
                assert_eq!(last.locality, 1, "{policy:?}");
            }
            let ctx = PickContext {
                random: [1, 2, 3],
                hash: None,
                in_flight: &|_| 0,
            };
            let everything = [
                first,
                second,
                HostId {
                    locality: 1,
                    host: 0,
                },
            ];
            assert_eq!(balancer.pick_avoiding(&ctx, &everything), None);
        }
    }

    fn hash_assignment(policy: Policy, hosts: Vec<Host>, clients: u64) -> Vec<String> {
        let mut balancer = Balancer::new(policy, one_locality(hosts), 1.4);
        (0..clients)
            .map(|c| {
                let ctx = PickContext {
                    random: [c, c, c],
                    hash: Some(hash64(format!("client-{c}").as_bytes())),
                    in_flight: &|_| 0,
                };
                let id = balancer.pick(&ctx).expect("host");
                balancer.host(id).expect("host").address.clone()
            })
            .collect()
    }

    #[test]
    fn hashing_is_sticky_and_moves_few_clients() {
        for policy in [Policy::RingHash, Policy::Maglev] {
            let four: Vec<Host> = (1..=4).map(|n| host(n, 1)).collect();
            let before = hash_assignment(policy, four.clone(), 2_000);
            assert_eq!(
                before,
                hash_assignment(policy, four.clone(), 2_000),
                "{policy:?} is deterministic"
            );
            let mut five = four;
            five.push(host(5, 1));
            let after = hash_assignment(policy, five, 2_000);
            let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
            // Ideal is 1/5 of clients; allow some slack.
            assert!(moved < 2_000 * 3 / 10, "{policy:?} moved {moved}");
            assert!(
                after.iter().filter(|a| *a == "10.0.0.5:80").count() > 200,
                "{policy:?}: new host gets a share"
            );
        }
    }

    proptest! {
        #[test]
        fn picks_only_healthy_hosts(
            health in proptest::collection::vec(any::<bool>(), 1..8),
            policy in prop_oneof![Just(Policy::RoundRobin), Just(Policy::Random), Just(Policy::LeastRequest), Just(Policy::RingHash), Just(Policy::Maglev)],
            seed in any::<u64>(),
        ) {
            let hosts: Vec<Host> = health.iter().enumerate().map(|(i, h)| Host { address: format!("10.0.0.{i}:80"), weight: 1, healthy: *h }).collect();
            let mut balancer = Balancer::new(policy, one_locality(hosts), 1.4);
            let mut rng = Rng(seed);
            for _ in 0..50 {
                let ctx = PickContext { random: rng.three(), hash: Some(rng.next()), in_flight: &|_| 0 };
                match balancer.pick(&ctx) {
                    Some(id) => prop_assert!(balancer.host(id).expect("host").healthy),
                    None => prop_assert!(health.iter().all(|h| !h)),
                }
            }
        }
    }
}
