//! What the property tests share: a deterministic generator and the
//! comparison of answers computed in different summation orders.
#![allow(dead_code)] // each test binary uses its own part

use kanade_queries::{FleetPoint, HostPoint, Timeline};

/// A small deterministic generator (splitmix64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Equal up to the rounding of a different summation order.
pub fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => false,
    }
}

/// Two host timelines with the same buckets and close averages.
pub fn same_host(a: &[HostPoint], b: &[HostPoint]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.at == y.at
                && x.values.len() == HostPoint::columns().len()
                && x.values.len() == y.values.len()
                && x.values.iter().zip(&y.values).all(|(u, v)| close(*u, *v))
        })
}

/// Two fleet series with the same buckets and close values.
pub fn same_fleet(a: &[FleetPoint], b: &[FleetPoint]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.at == y.at && close(x.value, y.value))
}

/// Two stacked process timelines: the same names in the same order, the
/// same buckets, each with the same series and close values; `Err` says
/// where they differ.
pub fn same_timeline(a: &Timeline, b: &Timeline) -> Result<(), String> {
    if a.names != b.names {
        return Err(format!("names {:?} vs {:?}", a.names, b.names));
    }
    if a.points.len() != b.points.len() {
        return Err(format!("{} vs {} points", a.points.len(), b.points.len()));
    }
    for (x, y) in a.points.iter().zip(&b.points) {
        let mut keys: Vec<&String> = x.values.keys().collect();
        keys.sort();
        let mut other: Vec<&String> = y.values.keys().collect();
        other.sort();
        if x.at != y.at || keys != other {
            return Err(format!("{} {keys:?} vs {} {other:?}", x.at, y.at));
        }
        for k in keys {
            if !close(Some(x.values[k]), Some(y.values[k])) {
                return Err(format!("{} {k}: {} vs {}", x.at, x.values[k], y.values[k]));
            }
        }
    }
    Ok(())
}
