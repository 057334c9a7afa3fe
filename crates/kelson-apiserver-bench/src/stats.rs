//! Percentiles: exact ones over a few thousand samples, and a small
//! log-linear histogram for the millions of watch deliveries (storing each
//! of those would cost the client more memory than the server uses).

use std::time::Duration;

/// The nearest-rank percentile (`p` in 0..=100) of `sorted`; `None` when
/// there are no samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Below this many microseconds every value has its own bucket.
const LINEAR: u64 = 128;
/// Buckets per power of two above `LINEAR`: values are kept to within 1/64.
const SUB: u64 = 64;
const SUB_BITS: u32 = 6;

/// Counts of microsecond values, exact below 128 µs and within 1.6 % above.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram::default()
    }

    fn index(v: u64) -> usize {
        if v < LINEAR {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros(); // >= 7
        let mantissa = (v >> (exp - SUB_BITS)) & (SUB - 1);
        (LINEAR + u64::from(exp - 7) * SUB + mantissa) as usize
    }

    /// The middle of bucket `i`.
    fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < LINEAR {
            return i;
        }
        let exp = (i - LINEAR) / SUB + 7;
        let mantissa = (i - LINEAR) % SUB;
        let width = 1u64 << (exp - u64::from(SUB_BITS));
        (1u64 << exp) + mantissa * width + width / 2
    }

    pub fn record(&mut self, micros: u64) {
        let i = Self::index(micros);
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.total += 1;
        self.max = self.max.max(micros);
    }

    pub fn merge(&mut self, other: &Histogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> Option<Duration> {
        (self.total > 0).then(|| Duration::from_micros(self.max))
    }

    /// Nearest-rank percentile (`p` in 0..=100), to the bucket's precision.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        let rank = (((p / 100.0) * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_micros(Self::value(i).min(self.max)));
            }
        }
        Some(Duration::from_micros(self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&v, 0.0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn histogram_is_exact_for_small_values() {
        let mut h = Histogram::new();
        for v in 0..100 {
            h.record(v);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.percentile(50.0), Some(Duration::from_micros(49)));
        assert_eq!(h.percentile(99.0), Some(Duration::from_micros(98)));
    }

    #[test]
    fn histogram_stays_within_two_percent() {
        let mut h = Histogram::new();
        // 1 ms .. 10 s, uniformly spread.
        let values: Vec<u64> = (1..=10_000).map(|i| i * 1_000).collect();
        for &v in &values {
            h.record(v);
        }
        for p in [50.0, 90.0, 99.0, 99.9] {
            let exact = percentile(
                &values
                    .iter()
                    .map(|&v| Duration::from_micros(v))
                    .collect::<Vec<_>>(),
                p,
            )
            .unwrap()
            .as_micros() as f64;
            let got = h.percentile(p).unwrap().as_micros() as f64;
            assert!((got - exact).abs() / exact < 0.02, "p{p}: {got} vs {exact}");
        }
        assert_eq!(h.max(), Some(Duration::from_secs(10)));
    }

    #[test]
    fn merged_histograms_count_both() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(10);
        b.record(5_000_000);
        b.record(20);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.percentile(50.0), Some(Duration::from_micros(20)));
        assert_eq!(a.max(), Some(Duration::from_secs(5)));
        assert_eq!(Histogram::new().percentile(50.0), None);
    }
}
