//! Envoy's priority load: each priority takes traffic in proportion to its
//! healthy share times the overprovisioning factor, capped at 100%; what is
//! left spills to the next priority. If all priorities together are not
//! 100% healthy, the loads are scaled up to 100%.

/// A priority's health in percent: its healthy share of weight times the
/// overprovisioning factor, capped at 100.
pub fn priority_health((healthy, total): (u64, u64), overprovisioning: f64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (100.0 * overprovisioning * healthy as f64 / total as f64).min(100.0)
    }
}

/// Percent of traffic per priority (summing to 100 unless nothing is healthy),
/// given each priority's (healthy weight, total weight).
pub fn priority_loads(levels: &[(u64, u64)], overprovisioning: f64) -> Vec<f64> {
    let health: Vec<f64> = levels
        .iter()
        .map(|&level| priority_health(level, overprovisioning))
        .collect();
    let total_health: f64 = health.iter().sum::<f64>().min(100.0);
    if total_health <= 0.0 {
        return vec![0.0; levels.len()];
    }
    let mut remaining = 100.0;
    let mut loads = Vec::with_capacity(levels.len());
    for h in &health {
        let scaled = h * 100.0 / total_health;
        let load = scaled.min(remaining);
        loads.push(load);
        remaining -= load;
    }
    loads
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spills_as_health_drops() {
        // All healthy: priority 0 takes everything.
        assert_eq!(priority_loads(&[(10, 10), (10, 10)], 1.4), vec![100.0, 0.0]);
        // 50% healthy at 1.4: priority 0 takes 70%, the rest spills.
        let loads = priority_loads(&[(5, 10), (10, 10)], 1.4);
        assert!(
            (loads[0] - 70.0).abs() < 1e-9 && (loads[1] - 30.0).abs() < 1e-9,
            "{loads:?}"
        );
        // Nothing healthy in priority 0.
        assert_eq!(priority_loads(&[(0, 10), (10, 10)], 1.4), vec![0.0, 100.0]);
        // Everything half healthy: scaled to sum to 100.
        let loads = priority_loads(&[(2, 10), (2, 10)], 1.0);
        assert!(
            (loads[0] - 50.0).abs() < 1e-9 && (loads[1] - 50.0).abs() < 1e-9,
            "{loads:?}"
        );
        assert_eq!(priority_loads(&[(0, 10)], 1.4), vec![0.0]);
    }

    #[test]
    fn health_is_the_healthy_share_times_the_factor_capped() {
        assert!((priority_health((5, 10), 1.4) - 70.0).abs() < 1e-9);
        assert_eq!(priority_health((8, 10), 1.4), 100.0);
        assert_eq!(priority_health((0, 0), 1.4), 0.0);
    }
}
