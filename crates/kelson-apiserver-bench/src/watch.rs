//! Watch readers: each follows one watch stream, splits it into event lines,
//! and for every MODIFIED pod measures the time since the request that
//! changed it was sent. Parsing is a byte scan (no JSON decode) so that the readers keep up
//! with the server.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use http::Method;
use http_body_util::BodyExt;
use tokio::sync::watch;

use crate::client::Conn;
use crate::stats::Histogram;

/// Pod names are this prefix and a number: the index into [`SendTimes`].
pub const POD_PREFIX: &str = "bench-";

pub fn pod_name(i: usize) -> String {
    format!("{POD_PREFIX}{i:06}")
}

/// When each pod's change request was sent, as nanoseconds since `base`
/// plus one (zero: not sent yet).
pub struct SendTimes {
    base: Instant,
    at: Vec<AtomicU64>,
}

impl SendTimes {
    pub fn new(pods: usize) -> SendTimes {
        SendTimes {
            base: Instant::now(),
            at: (0..pods).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn mark(&self, i: usize) {
        if let Some(slot) = self.at.get(i) {
            let ns = self.base.elapsed().as_nanos() as u64 + 1;
            slot.store(ns, Ordering::Release);
        }
    }

    /// Microseconds from the send of pod `i` to `now`.
    fn since(&self, i: usize, now: Instant) -> Option<u64> {
        let ns = self.at.get(i)?.load(Ordering::Acquire);
        if ns == 0 {
            return None;
        }
        let now_ns = now.duration_since(self.base).as_nanos() as u64 + 1;
        Some(now_ns.saturating_sub(ns) / 1_000)
    }
}

/// Counters shared by all readers, for progress and the drain check.
pub struct Shared {
    pub sends: SendTimes,
    /// MODIFIED events of bench pods seen by each watch.
    pub changed: Vec<AtomicU64>,
    /// Nanoseconds since `sends.base` (plus one) of the latest delivery.
    pub last_delivery: AtomicU64,
}

impl Shared {
    pub fn new(pods: usize, watches: usize) -> Shared {
        Shared {
            sends: SendTimes::new(pods),
            changed: (0..watches).map(|_| AtomicU64::new(0)).collect(),
            last_delivery: AtomicU64::new(0),
        }
    }

    pub fn total_changed(&self) -> u64 {
        self.changed.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    /// When the latest event was delivered, if any.
    pub fn last_delivery(&self) -> Option<Instant> {
        let ns = self.last_delivery.load(Ordering::Relaxed);
        (ns > 0).then(|| self.sends.base + std::time::Duration::from_nanos(ns - 1))
    }
}

/// How a watch ended, or that it was still open when the bench stopped it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum End {
    StillOpen,
    /// The server did not answer 200.
    Refused(u16),
    /// An ERROR event, with its Status code and message.
    ErrorEvent(String),
    /// The server ended the stream cleanly.
    Closed,
    /// The connection or stream failed.
    Transport(String),
}

/// What one reader saw.
pub struct Outcome {
    pub delivery: Histogram,
    pub events: BTreeMap<String, u64>,
    pub end: End,
}

/// The event type and, for a bench pod, its number.
fn scan(line: &[u8]) -> (&[u8], Option<usize>) {
    // Plain events begin with their type; re-encoded ones (ERROR, BOOKMARK)
    // have sorted keys, so the outer type is the last "type" in the line.
    const TYPE: &[u8] = b"\"type\":\"";
    let kind = if let Some(rest) = line.strip_prefix(b"{\"type\":\"") {
        until_quote(rest)
    } else {
        rfind(line, TYPE)
            .map(|at| until_quote(&line[at + TYPE.len()..]))
            .unwrap_or(b"?")
    };
    let name = find(line, b"\"name\":\"bench-").and_then(|at| {
        let digits = &line[at + b"\"name\":\"bench-".len()..];
        let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
        std::str::from_utf8(&digits[..n]).ok()?.parse().ok()
    });
    (kind, name)
}

fn until_quote(s: &[u8]) -> &[u8] {
    let end = s.iter().position(|&b| b == b'"').unwrap_or(s.len());
    &s[..end]
}

// Vectorised searches: the readers scan every byte of every event.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::rfind(hay, needle)
}

/// The message of an ERROR event's Status, for the report.
fn error_summary(line: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(line).unwrap_or_default();
    let o = &v["object"];
    format!(
        "{} {}: {}",
        o["code"],
        o["reason"].as_str().unwrap_or(""),
        o["message"].as_str().unwrap_or("")
    )
}

/// Opens watch `id` (`path` already holds `watch=1&resourceVersion=…`) and
/// returns once the server answered, with the reader running on its own.
pub async fn open(
    conn: &Conn,
    path: &str,
    id: usize,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Outcome> {
    let resp = conn.start(Method::GET, path, None).await;
    tokio::spawn(async move {
        let mut out = Outcome {
            delivery: Histogram::new(),
            events: BTreeMap::new(),
            end: End::StillOpen,
        };
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                out.end = End::Transport(e.to_string());
                return out;
            }
        };
        if !resp.status().is_success() {
            out.end = End::Refused(resp.status().as_u16());
            return out;
        }
        out.end = read(resp.into_body(), id, &shared, stop, &mut out).await;
        out
    })
}

async fn read(
    mut body: hyper::body::Incoming,
    id: usize,
    shared: &Shared,
    mut stop: watch::Receiver<bool>,
    out: &mut Outcome,
) -> End {
    // Holds a partial line between frames; usually empty, since the server
    // sends each event as one frame.
    let mut buf = BytesMut::new();
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = stop.changed() => return End::StillOpen,
        };
        let data = match frame {
            None => return End::Closed,
            Some(Err(e)) => return End::Transport(e.to_string()),
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue, // trailers
            },
        };
        let now = Instant::now();
        let step = if buf.is_empty() {
            lines(&data, id, shared, now, out).map(|used| buf.extend_from_slice(&data[used..]))
        } else {
            buf.extend_from_slice(&data);
            lines(&buf, id, shared, now, out).map(|used| buf.advance(used))
        };
        if let Err(end) = step {
            return end;
        }
        let ns = now.duration_since(shared.sends.base).as_nanos() as u64 + 1;
        shared.last_delivery.fetch_max(ns, Ordering::Relaxed);
        if buf.len() > 64 << 20 {
            return End::Transport("an event line over 64 MiB".into());
        }
    }
}

/// Handles the complete lines of `data`; returns how many bytes they took,
/// or how the watch ended.
fn lines(
    data: &[u8],
    id: usize,
    shared: &Shared,
    now: Instant,
    out: &mut Outcome,
) -> Result<usize, End> {
    let mut used = 0;
    while let Some(nl) = memchr::memchr(b'\n', &data[used..]) {
        let line = &data[used..used + nl];
        used += nl + 1;
        let (kind, pod) = scan(line);
        if kind == b"ERROR" {
            *out.events.entry("ERROR".into()).or_default() += 1;
            return Err(End::ErrorEvent(error_summary(line)));
        }
        if kind == b"MODIFIED" {
            if let Some(i) = pod {
                if let Some(us) = shared.sends.since(i, now) {
                    out.delivery.record(us);
                }
                if let Some(a) = shared.changed.get(id) {
                    a.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let kind = std::str::from_utf8(kind).unwrap_or("?");
        match out.events.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                out.events.insert(kind.to_string(), 1);
            }
        }
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_plain_and_reencoded_events() {
        let added = br#"{"type":"ADDED","object":{"apiVersion":"v1","kind":"Pod","metadata":{"labels":{"app":"bench"},"managedFields":[{"fieldsV1":{"f:metadata":{"f:name":{}}}}],"name":"bench-000042","namespace":"bench"},"spec":{"containers":[{"name":"app"}]}}}"#;
        let (kind, pod) = scan(added);
        assert_eq!(kind, b"ADDED");
        assert_eq!(pod, Some(42));

        let error = br#"{"object":{"apiVersion":"v1","code":410,"kind":"Status","message":"too old resource version: 5 (9)","reason":"Expired","status":"Failure"},"type":"ERROR"}"#;
        let (kind, pod) = scan(error);
        assert_eq!(kind, b"ERROR");
        assert_eq!(pod, None);
        assert_eq!(
            error_summary(error),
            "410 Expired: too old resource version: 5 (9)"
        );

        let (kind, _) = scan(br#"{"type":"MODIFIED","object":{"metadata":{"name":"other"}}}"#);
        assert_eq!(kind, b"MODIFIED");
    }

    #[test]
    fn delivery_time_needs_a_send_mark() {
        let t = SendTimes::new(3);
        assert_eq!(t.since(1, Instant::now()), None);
        t.mark(1);
        let later = Instant::now() + std::time::Duration::from_millis(5);
        let us = t.since(1, later).unwrap();
        assert!((5_000..1_000_000).contains(&us), "{us}");
        assert_eq!(t.since(7, later), None);
        assert_eq!(pod_name(42), "bench-000042");
    }
}
