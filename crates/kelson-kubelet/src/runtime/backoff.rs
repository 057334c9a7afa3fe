//! client-go's `flowcontrol.Backoff` without jitter, as the kubelet uses it
//! for container restarts and image pulls: the first delay is `initial`,
//! each further one doubles up to `max`, and an entry not updated for
//! `2 × max` starts over. Times are Unix nanoseconds.

use std::collections::HashMap;

#[derive(Debug, Clone, Copy)]
struct Entry {
    backoff: i64,
    last_update: i64,
}

#[derive(Debug)]
pub struct Backoff {
    initial: i64,
    max: i64,
    entries: HashMap<String, Entry>,
}

const NANOS: i64 = 1_000_000_000;

impl Backoff {
    pub fn new(initial_secs: i64, max_secs: i64) -> Backoff {
        Backoff {
            initial: initial_secs * NANOS,
            max: max_secs * NANOS,
            entries: HashMap::new(),
        }
    }

    fn expired(&self, event_time: i64, last_update: i64) -> bool {
        event_time.saturating_sub(last_update) > self.max.saturating_mul(2)
    }

    /// The current delay of `key` (0 when unknown), in nanoseconds.
    pub fn get(&self, key: &str) -> i64 {
        self.entries.get(key).map_or(0, |e| e.backoff)
    }

    /// Records one more failure of `key` at `event_time`.
    pub fn next(&mut self, key: &str, event_time: i64, now: i64) {
        let fresh = match self.entries.get(key) {
            None => true,
            Some(e) => self.expired(event_time, e.last_update),
        };
        let backoff = if fresh {
            self.initial
        } else {
            self.get(key).saturating_mul(2).min(self.max)
        };
        self.entries.insert(
            key.to_string(),
            Entry {
                backoff,
                last_update: now,
            },
        );
    }

    /// Whether `key` must still wait after an event at `event_time`.
    pub fn is_in_backoff_since(&self, key: &str, event_time: i64, now: i64) -> bool {
        let Some(e) = self.entries.get(key) else {
            return false;
        };
        if self.expired(event_time, e.last_update) {
            return false;
        }
        now.saturating_sub(event_time) < e.backoff
    }

    /// Whether `key` is in back-off measured from its last update (image
    /// pulls).
    pub fn is_in_backoff_since_update(&self, key: &str, now: i64) -> bool {
        let Some(e) = self.entries.get(key) else {
            return false;
        };
        if self.expired(now, e.last_update) {
            return false;
        }
        now.saturating_sub(e.last_update) < e.backoff
    }

    /// Drops entries idle for over `2 × max`.
    pub fn gc(&mut self, now: i64) {
        let limit = self.max.saturating_mul(2);
        self.entries
            .retain(|_, e| now.saturating_sub(e.last_update) <= limit);
    }
}

/// Go's `time.Duration.String()` for whole milliseconds and more: `10s`,
/// `1m20s`, `5m0s`, `1.5s`, `250ms`.
pub fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let neg = nanos < 0;
    let n = nanos.unsigned_abs();
    let sign = if neg { "-" } else { "" };
    if n < 1_000_000_000 {
        // Sub-second: in ms (µs and ns omitted: callers truncate to ms).
        let ms = n / 1_000_000;
        let rem = n % 1_000_000;
        if rem == 0 {
            return format!("{sign}{ms}ms");
        }
        let frac = format!("{:06}", rem);
        return format!("{sign}{ms}.{}ms", frac.trim_end_matches('0'));
    }
    let secs_total = n / 1_000_000_000;
    let frac_ns = n % 1_000_000_000;
    let h = secs_total / 3600;
    let m = (secs_total % 3600) / 60;
    let s = secs_total % 60;
    let mut sec = s.to_string();
    if frac_ns != 0 {
        let f = format!("{:09}", frac_ns);
        sec = format!("{s}.{}", f.trim_end_matches('0'));
    }
    if h > 0 {
        format!("{sign}{h}h{m}m{sec}s")
    } else if m > 0 {
        format!("{sign}{m}m{sec}s")
    } else {
        format!("{sign}{sec}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = NANOS;

    #[test]
    fn doubles_to_max_and_resets_after_twice_max() {
        let mut b = Backoff::new(10, 300);
        let mut t = 1_000 * S;
        let mut seen = Vec::new();
        for _ in 0..7 {
            b.next("k", t, t);
            seen.push(go_duration(b.get("k")));
            t += S;
        }
        assert_eq!(
            seen,
            ["10s", "20s", "40s", "1m20s", "2m40s", "5m0s", "5m0s"]
        );
        // Ten minutes and a bit without failures: starts over.
        t += 601 * S;
        b.next("k", t, t);
        assert_eq!(b.get("k"), 10 * S);
    }

    #[test]
    fn in_backoff_relative_to_event() {
        let mut b = Backoff::new(10, 300);
        let finished = 100 * S;
        assert!(!b.is_in_backoff_since("k", finished, finished + S));
        b.next("k", finished, finished + S);
        assert!(b.is_in_backoff_since("k", finished, finished + 9 * S));
        assert!(!b.is_in_backoff_since("k", finished, finished + 10 * S));
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(1_234_000_000), "1.234s");
        assert_eq!(go_duration(250_000_000), "250ms");
        assert_eq!(go_duration(3_600 * S + 61 * S), "1h1m1s");
    }
}
