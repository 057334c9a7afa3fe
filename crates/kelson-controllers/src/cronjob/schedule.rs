//! Cron schedules as CronJobs write them. Upstream's controller and API
//! validation both use robfig/cron v3's standard parser
//! (`cron.ParseStandard`); this is the same grammar and the same
//! next-activation search, written for jiff:
//!
//! - five fields: minute, hour, day of month, month, day of week;
//! - each a comma list of `*`, `?` (same as `*`), `N`, `N-M`, with an
//!   optional `/step` (`N/step` means `N-max/step`);
//! - month names `jan`…`dec` and day names `sun`…`sat`, any case; day of
//!   week 0-6 (7 is rejected, as upstream does);
//! - day of month and day of week are ANDed when either is a `*` (or `?`,
//!   or `*/1`), ORed otherwise, as in Vixie cron;
//! - descriptors `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`,
//!   `@midnight`, `@hourly` and `@every <Go duration>` (upstream's
//!   validation accepts `@every` since ParseStandard does);
//! - an optional `TZ=<zone> ` or `CRON_TZ=<zone> ` prefix.
//!
//! The search walks fields the way robfig does, so daylight-saving
//! transitions behave as upstream: a time inside a spring-forward gap is
//! skipped, and a time inside a fall-back overlap fires twice.

use jiff::civil::{Date, DateTime};
use jiff::tz::{Offset, TimeZone};
use jiff::{SignedDuration, Timestamp};

/// Why a schedule does not parse; the messages are robfig/cron's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("empty spec string")]
    Empty,
    #[error("provided bad location {name}: {reason}")]
    BadLocation { name: String, reason: String },
    #[error("expected exactly 5 fields, found {count}: [{fields}]")]
    FieldCount { count: usize, fields: String },
    #[error(
        "failed to parse int from {expr}: strconv.Atoi: parsing {}: {reason}",
        go_quote(expr)
    )]
    NotAnInt { expr: String, reason: &'static str },
    #[error("negative number ({number}) not allowed: {expr}")]
    Negative { number: i64, expr: String },
    #[error("too many hyphens: {0}")]
    TooManyHyphens(String),
    #[error("too many slashes: {0}")]
    TooManySlashes(String),
    #[error("beginning of range ({start}) below minimum ({min}): {expr}")]
    BelowMinimum { start: u64, min: u64, expr: String },
    #[error("end of range ({end}) above maximum ({max}): {expr}")]
    AboveMaximum { end: u64, max: u64, expr: String },
    #[error("beginning of range ({start}) beyond end of range ({end}): {expr}")]
    StartAfterEnd { start: u64, end: u64, expr: String },
    #[error("step of range should be a positive number: {0}")]
    ZeroStep(String),
    #[error("failed to parse duration {descriptor}: {reason}")]
    BadDuration { descriptor: String, reason: String },
    #[error("unrecognized descriptor: {0}")]
    UnknownDescriptor(String),
}

/// Why a time zone name does not load; the message is Go's
/// `time.LoadLocation` error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    #[error("unknown time zone {0}")]
    Unknown(String),
    #[error("time: invalid location name")]
    InvalidName,
}

/// A zone as Go's `time.LoadLocation` resolves a name: `None` is Go's
/// `time.Local` (the process's own zone), which `""` does not mean: an
/// empty name is UTC, as in Go.
pub fn load_location(name: &str) -> Result<Option<TimeZone>, ZoneError> {
    match name {
        "" | "UTC" => return Ok(Some(TimeZone::UTC)),
        "Local" => return Ok(None),
        _ => {}
    }
    if name.starts_with('/') || name.starts_with('\\') || name.contains("..") {
        return Err(ZoneError::InvalidName);
    }
    match TimeZone::get(name) {
        // Go reads the zoneinfo files by name, so the match is
        // case-sensitive; jiff's database lookup is not.
        Ok(tz) if tz.iana_name() == Some(name) => Ok(Some(tz)),
        _ => Err(ZoneError::Unknown(name.to_string())),
    }
}

const STAR_BIT: u64 = 1 << 63;

struct Bounds {
    min: u64,
    max: u64,
    names: &'static [(&'static str, u64)],
}

const SECONDS: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &[
        ("sun", 0),
        ("mon", 1),
        ("tue", 2),
        ("wed", 3),
        ("thu", 4),
        ("fri", 5),
        ("sat", 6),
    ],
};

/// Bit sets of the matching values of each field (bit N = value N), with
/// `STAR_BIT` where the field was a plain `*` or `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    second: u64,
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Fields(Fields),
    /// `@every`: a fixed delay, whole seconds, at least one.
    Every(SignedDuration),
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    kind: Kind,
    /// From a `TZ=` prefix; `None` evaluates in the caller's local zone.
    zone: Option<TimeZone>,
}

impl Schedule {
    /// Parses a standard (five-field) spec as `cron.ParseStandard` does.
    pub fn parse(spec: &str) -> Result<Schedule, Error> {
        if spec.is_empty() {
            return Err(Error::Empty);
        }
        let mut spec = spec;
        let mut zone = None;
        if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
            let eq = spec.find('=').unwrap_or(0);
            let Some(space) = spec.find(' ') else {
                // robfig would index out of range here; refuse instead.
                return Err(Error::BadLocation {
                    name: spec[eq + 1..].to_string(),
                    reason: "no schedule after the time zone".into(),
                });
            };
            let name = &spec[eq + 1..space];
            zone = load_location(name).map_err(|e| Error::BadLocation {
                name: name.to_string(),
                reason: e.to_string(),
            })?;
            spec = spec[space..].trim();
        }
        if spec.starts_with('@') {
            return Ok(Schedule {
                kind: parse_descriptor(spec)?,
                zone,
            });
        }
        let fields: Vec<&str> = spec.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(Error::FieldCount {
                count: fields.len(),
                fields: fields.join(" "),
            });
        }
        let parsed = Fields {
            second: get_field("0", &SECONDS)?,
            minute: get_field(fields[0], &MINUTES)?,
            hour: get_field(fields[1], &HOURS)?,
            dom: get_field(fields[2], &DOM)?,
            month: get_field(fields[3], &MONTHS)?,
            dow: get_field(fields[4], &DOW)?,
        };
        Ok(Schedule {
            kind: Kind::Fields(parsed),
            zone,
        })
    }

    /// The zone of a `TZ=` prefix, if the spec had one.
    pub fn zone(&self) -> Option<&TimeZone> {
        self.zone.as_ref()
    }

    /// The first activation strictly after `after`, evaluated in the
    /// schedule's own zone or else in `local`. None when nothing matches
    /// within five years (e.g. `0 0 30 2 *`), as robfig returns its zero
    /// time then.
    pub fn next(&self, after: Timestamp, local: &TimeZone) -> Option<Timestamp> {
        match &self.kind {
            Kind::Every(delay) => {
                let sub = SignedDuration::from_nanos(i64::from(after.subsec_nanosecond()));
                after.checked_add(*delay).ok()?.checked_sub(sub).ok()
            }
            Kind::Fields(f) => f.next(after, self.zone.as_ref().unwrap_or(local)),
        }
    }
}

fn parse_descriptor(spec: &str) -> Result<Kind, Error> {
    let all = |b: &Bounds| get_bits(b.min, b.max, 1) | STAR_BIT;
    let first = |b: &Bounds| 1u64 << b.min;
    let fields = match spec {
        "@yearly" | "@annually" => Fields {
            second: first(&SECONDS),
            minute: first(&MINUTES),
            hour: first(&HOURS),
            dom: first(&DOM),
            month: first(&MONTHS),
            dow: all(&DOW),
        },
        "@monthly" => Fields {
            second: first(&SECONDS),
            minute: first(&MINUTES),
            hour: first(&HOURS),
            dom: first(&DOM),
            month: all(&MONTHS),
            dow: all(&DOW),
        },
        "@weekly" => Fields {
            second: first(&SECONDS),
            minute: first(&MINUTES),
            hour: first(&HOURS),
            dom: all(&DOM),
            month: all(&MONTHS),
            dow: first(&DOW),
        },
        "@daily" | "@midnight" => Fields {
            second: first(&SECONDS),
            minute: first(&MINUTES),
            hour: first(&HOURS),
            dom: all(&DOM),
            month: all(&MONTHS),
            dow: all(&DOW),
        },
        "@hourly" => Fields {
            second: first(&SECONDS),
            minute: first(&MINUTES),
            hour: all(&HOURS),
            dom: all(&DOM),
            month: all(&MONTHS),
            dow: all(&DOW),
        },
        _ => {
            if let Some(d) = spec.strip_prefix("@every ") {
                let nanos = parse_go_duration(d).map_err(|reason| Error::BadDuration {
                    descriptor: spec.to_string(),
                    reason,
                })?;
                // Whole seconds, at least one (robfig's Every).
                let nanos = nanos.max(1_000_000_000);
                let secs = nanos / 1_000_000_000;
                return Ok(Kind::Every(SignedDuration::from_secs(secs)));
            }
            return Err(Error::UnknownDescriptor(spec.to_string()));
        }
    };
    Ok(Kind::Fields(fields))
}

/// A comma list of ranges; empty elements are skipped as Go's
/// `strings.FieldsFunc` does.
fn get_field(field: &str, b: &Bounds) -> Result<u64, Error> {
    let mut bits = 0;
    for expr in field.split(',').filter(|e| !e.is_empty()) {
        bits |= get_range(expr, b)?;
    }
    Ok(bits)
}

/// `*` | `?` | `N` | `N-M`, optionally followed by `/step`.
fn get_range(expr: &str, b: &Bounds) -> Result<u64, Error> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_and_high.len() == 1;
    let (start, mut end, mut extra);
    if low_and_high[0] == "*" || low_and_high[0] == "?" {
        // Whatever follows a star's hyphen is ignored, as in robfig.
        start = b.min;
        end = b.max;
        extra = STAR_BIT;
    } else {
        start = parse_int_or_name(low_and_high[0], b.names)?;
        end = match low_and_high.len() {
            1 => start,
            2 => parse_int_or_name(low_and_high[1], b.names)?,
            _ => return Err(Error::TooManyHyphens(expr.to_string())),
        };
        extra = 0;
    }
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = must_parse_int(range_and_step[1])?;
            if single {
                end = b.max;
            }
            if step > 1 {
                extra = 0;
            }
            step
        }
        _ => return Err(Error::TooManySlashes(expr.to_string())),
    };
    if start < b.min {
        return Err(Error::BelowMinimum {
            start,
            min: b.min,
            expr: expr.to_string(),
        });
    }
    if end > b.max {
        return Err(Error::AboveMaximum {
            end,
            max: b.max,
            expr: expr.to_string(),
        });
    }
    if start > end {
        return Err(Error::StartAfterEnd {
            start,
            end,
            expr: expr.to_string(),
        });
    }
    if step == 0 {
        return Err(Error::ZeroStep(expr.to_string()));
    }
    Ok(get_bits(start, end, step) | extra)
}

fn parse_int_or_name(expr: &str, names: &[(&str, u64)]) -> Result<u64, Error> {
    let lower = expr.to_lowercase();
    if let Some((_, v)) = names.iter().find(|(n, _)| *n == lower) {
        return Ok(*v);
    }
    must_parse_int(expr)
}

/// Go's `strconv.Atoi` (optional sign, decimal digits, int64 range), then
/// robfig's refusal of negative numbers.
fn must_parse_int(expr: &str) -> Result<u64, Error> {
    let bad = |reason| Error::NotAnInt {
        expr: expr.to_string(),
        reason,
    };
    let (negative, digits) = match expr.as_bytes().first() {
        Some(b'-') => (true, &expr[1..]),
        Some(b'+') => (false, &expr[1..]),
        _ => (false, expr),
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad("invalid syntax"));
    }
    let magnitude: i128 = digits
        .bytes()
        .try_fold(0i128, |acc, c| {
            let v = acc * 10 + i128::from(c - b'0');
            (v <= i128::from(i64::MAX) + 1).then_some(v)
        })
        .ok_or_else(|| bad("value out of range"))?;
    let value = if negative { -magnitude } else { magnitude };
    let value = i64::try_from(value).map_err(|_| bad("value out of range"))?;
    if value < 0 {
        return Err(Error::Negative {
            number: value,
            expr: expr.to_string(),
        });
    }
    Ok(value as u64)
}

/// Bits `min..=max` every `step` (callers keep `max` below 64).
fn get_bits(min: u64, max: u64, step: u64) -> u64 {
    let mut bits = 0;
    let mut i = min;
    while i <= max && i < 64 {
        bits |= 1 << i;
        match i.checked_add(step) {
            Some(n) => i = n,
            None => break,
        }
    }
    bits
}

/// Go's `time.ParseDuration`, in nanoseconds, with Go's error messages.
fn parse_go_duration(orig: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {}", go_quote(orig));
    let mut s = orig;
    let mut neg = false;
    if let Some(c) = s.chars().next() {
        if c == '-' || c == '+' {
            neg = c == '-';
            s = &s[1..];
        }
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    const LIMIT: u64 = 1 << 63;
    let mut total: u64 = 0;
    while !s.is_empty() {
        let first = s.as_bytes()[0];
        if !(first == b'.' || first.is_ascii_digit()) {
            return Err(invalid());
        }
        // The integer part.
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let mut v: u64 = 0;
        for c in s[..digits].bytes() {
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(c - b'0')))
                .filter(|v| *v <= LIMIT)
                .ok_or_else(invalid)?;
        }
        let pre = digits > 0;
        s = &s[digits..];
        // The fraction: digits past what fits are dropped, as Go does.
        let mut f: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut post = false;
        if let Some(rest) = s.strip_prefix('.') {
            let n = rest.bytes().take_while(u8::is_ascii_digit).count();
            let mut overflow = false;
            for c in rest[..n].bytes() {
                if overflow {
                    continue;
                }
                if f > (i64::MAX as u64 - 9) / 10 {
                    overflow = true;
                    continue;
                }
                f = f * 10 + u64::from(c - b'0');
                scale *= 10.0;
            }
            post = n > 0;
            s = &rest[n..];
        }
        if !pre && !post {
            return Err(invalid());
        }
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {}", go_quote(orig)));
        }
        let unit_name = &s[..unit_len];
        s = &s[unit_len..];
        let unit: u64 = match unit_name {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    go_quote(unit_name),
                    go_quote(orig)
                ))
            }
        };
        if v > LIMIT / unit {
            return Err(invalid());
        }
        v *= unit;
        if f > 0 {
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(invalid());
            }
        }
        total = total
            .checked_add(v)
            .filter(|t| *t <= LIMIT)
            .ok_or_else(invalid)?;
    }
    if neg {
        return Ok((total as i128).wrapping_neg() as i64);
    }
    i64::try_from(total).map_err(|_| invalid())
}

/// Go's `strconv.Quote` for the ASCII cases error messages meet.
fn go_quote(s: &str) -> String {
    format!("{s:?}")
}

// ---------------------------------------------------------------------------
// Next activation: robfig's SpecSchedule.Next, field by field.

impl Fields {
    /// Whether some time can match at all. A field with no value (`,`
    /// parses to nothing) never matches; robfig finds that out by walking
    /// five years minute by minute, which would hold a worker for seconds.
    fn can_match(&self) -> bool {
        let set = |bits: u64| bits & !STAR_BIT != 0;
        let days = if self.dom & STAR_BIT != 0 || self.dow & STAR_BIT != 0 {
            set(self.dom) && set(self.dow)
        } else {
            set(self.dom) || set(self.dow)
        };
        days && set(self.second) && set(self.minute) && set(self.hour) && set(self.month)
    }

    fn next(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        if !self.can_match() {
            return None;
        }
        let civil = |t: Timestamp| tz.to_datetime(t);
        // Start at the upcoming whole second.
        let sub = SignedDuration::from_nanos(i64::from(after.subsec_nanosecond()));
        let mut t = after
            .checked_sub(sub)
            .ok()?
            .checked_add(SignedDuration::from_secs(1))
            .ok()?;
        let mut added = false;
        let year_limit = civil(t).year() + 5;
        'wrap: loop {
            if civil(t).year() > year_limit {
                return None;
            }
            // Month: civil arithmetic from the first of the month.
            while !has(self.month, civil(t).month()) {
                if !added {
                    added = true;
                    let c = civil(t);
                    t = go_date(tz, c.year(), c.month(), 1, 0)?;
                }
                t = add_civil(tz, t, 1, 0)?;
                if civil(t).month() == 1 {
                    continue 'wrap;
                }
            }
            // Day: civil arithmetic from midnight, nudged back to midnight
            // where a DST change moved it.
            while !self.day_matches(civil(t)) {
                if !added {
                    added = true;
                    let c = civil(t);
                    t = go_date(tz, c.year(), c.month(), c.day(), 0)?;
                }
                t = add_civil(tz, t, 0, 1)?;
                let hour = i64::from(civil(t).hour());
                if hour != 0 {
                    let shift = if hour > 12 { 24 - hour } else { -hour };
                    t = t.checked_add(SignedDuration::from_hours(shift)).ok()?;
                }
                if civil(t).day() == 1 {
                    continue 'wrap;
                }
            }
            // Hours, minutes and seconds advance in absolute time, so a
            // skipped hour never matches and a repeated one matches twice.
            while !has(self.hour, civil(t).hour()) {
                if !added {
                    added = true;
                    let c = civil(t);
                    t = go_date(tz, c.year(), c.month(), c.day(), c.hour())?;
                }
                t = t.checked_add(SignedDuration::from_hours(1)).ok()?;
                if civil(t).hour() == 0 {
                    continue 'wrap;
                }
            }
            while !has(self.minute, civil(t).minute()) {
                if !added {
                    added = true;
                    t = truncate(t, 60)?;
                }
                t = t.checked_add(SignedDuration::from_mins(1)).ok()?;
                if civil(t).minute() == 0 {
                    continue 'wrap;
                }
            }
            while !has(self.second, civil(t).second()) {
                if !added {
                    added = true;
                    t = truncate(t, 1)?;
                }
                t = t.checked_add(SignedDuration::from_secs(1)).ok()?;
                if civil(t).second() == 0 {
                    continue 'wrap;
                }
            }
            return Some(t);
        }
    }

    fn day_matches(&self, c: DateTime) -> bool {
        let dom = has(self.dom, c.day());
        let dow = has(self.dow, c.weekday().to_sunday_zero_offset());
        if self.dom & STAR_BIT != 0 || self.dow & STAR_BIT != 0 {
            dom && dow
        } else {
            dom || dow
        }
    }
}

fn has(bits: u64, value: i8) -> bool {
    (0..63).contains(&value) && bits & (1u64 << value) != 0
}

fn truncate(t: Timestamp, secs: i64) -> Option<Timestamp> {
    Timestamp::from_second(t.as_second().div_euclid(secs) * secs).ok()
}

/// Go's `time.Date(y, m, d, h, 0, 0, 0, loc)`.
fn go_date(tz: &TimeZone, year: i16, month: i8, day: i8, hour: i8) -> Option<Timestamp> {
    let dt = DateTime::new(year, month, day, hour, 0, 0, 0).ok()?;
    civil_to_instant(tz, dt)
}

/// Go's `t.AddDate(0, months, days)`: add to the civil date, let an
/// overflowing day roll into the next month, keep the wall-clock time.
fn add_civil(tz: &TimeZone, t: Timestamp, months: i64, days: i64) -> Option<Timestamp> {
    let c = tz.to_datetime(t);
    let index = i64::from(c.year()) * 12 + i64::from(c.month()) - 1 + months;
    let year = i16::try_from(index.div_euclid(12)).ok()?;
    let month = i8::try_from(index.rem_euclid(12) + 1).ok()?;
    let date = Date::new(year, month, 1)
        .ok()?
        .checked_add(jiff::Span::new().days(i64::from(c.day()) - 1 + days))
        .ok()?;
    civil_to_instant(tz, date.to_datetime(c.time()))
}

/// Go's resolution of a wall-clock time to an instant: take the offset in
/// force at the wall time read as UTC, and if the result falls outside
/// that offset's period, the offset in force at the result. A time in a
/// gap thus lands an hour early (or late), and one in an overlap on
/// whichever side that lookup finds, exactly as `time.Date` does.
fn civil_to_instant(tz: &TimeZone, dt: DateTime) -> Option<Timestamp> {
    let as_utc = Offset::UTC.to_timestamp(dt).ok()?;
    let first = tz.to_offset(as_utc);
    let guess = as_utc
        .checked_sub(SignedDuration::from_secs(i64::from(first.seconds())))
        .ok()?;
    let offset = tz.to_offset(guess);
    as_utc
        .checked_sub(SignedDuration::from_secs(i64::from(offset.seconds())))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn zone(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    /// The next `n` activations after `from`, as RFC 3339 in `tz`.
    fn nexts(spec: &str, from: &str, tz: &TimeZone, n: usize) -> Vec<String> {
        let s = Schedule::parse(spec).unwrap();
        let mut t = ts(from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = s.next(t, tz).unwrap();
            out.push(
                t.to_zoned(s.zone().unwrap_or(tz).clone())
                    .strftime("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string(),
            );
        }
        out
    }

    fn utc(spec: &str, from: &str, n: usize) -> Vec<String> {
        nexts(spec, from, &TimeZone::UTC, n)
    }

    fn err(spec: &str) -> String {
        Schedule::parse(spec).unwrap_err().to_string()
    }

    #[test]
    fn every_minute_fires_on_the_next_whole_minute() {
        assert_eq!(
            utc("* * * * *", "2024-05-14T10:07:00Z", 2),
            ["2024-05-14T10:08:00+00:00", "2024-05-14T10:09:00+00:00"]
        );
        assert_eq!(
            utc("*/1 * * * *", "2024-05-14T10:07:59.999Z", 1),
            ["2024-05-14T10:08:00+00:00"]
        );
        // Across the end of a year.
        assert_eq!(
            utc("* * * * *", "2024-12-31T23:59:30Z", 1),
            ["2025-01-01T00:00:00+00:00"]
        );
    }

    #[test]
    fn steps_ranges_and_lists() {
        assert_eq!(
            utc("*/15 * * * *", "2024-05-14T10:07:00Z", 4),
            [
                "2024-05-14T10:15:00+00:00",
                "2024-05-14T10:30:00+00:00",
                "2024-05-14T10:45:00+00:00",
                "2024-05-14T11:00:00+00:00"
            ]
        );
        // N/step means N-max/step.
        assert_eq!(
            utc("50/5 * * * *", "2024-05-14T10:07:00Z", 3),
            [
                "2024-05-14T10:50:00+00:00",
                "2024-05-14T10:55:00+00:00",
                "2024-05-14T11:50:00+00:00"
            ]
        );
        // 2024-05-17 is a Friday: weekdays 9, 13 and 17 o'clock, then Monday.
        assert_eq!(
            utc("30 9-17/4 * * 1-5", "2024-05-17T10:00:00Z", 3),
            [
                "2024-05-17T13:30:00+00:00",
                "2024-05-17T17:30:00+00:00",
                "2024-05-20T09:30:00+00:00"
            ]
        );
        assert_eq!(
            utc("5,10,45 3 * * *", "2024-05-14T03:07:00Z", 3),
            [
                "2024-05-14T03:10:00+00:00",
                "2024-05-14T03:45:00+00:00",
                "2024-05-15T03:05:00+00:00"
            ]
        );
    }

    #[test]
    fn names_of_months_and_days_in_any_case() {
        // Sundays to Tuesdays of January and July.
        assert_eq!(
            utc("0 0 * JAN,jul sun-Tue", "2024-06-15T00:00:00Z", 4),
            [
                "2024-07-01T00:00:00+00:00",
                "2024-07-02T00:00:00+00:00",
                "2024-07-07T00:00:00+00:00",
                "2024-07-08T00:00:00+00:00"
            ]
        );
    }

    #[test]
    fn day_of_month_and_week_and_or_or() {
        // Neither is a star: the 13th or any Friday (2024-09-13 is both).
        assert_eq!(
            utc("0 0 13 * 5", "2024-09-01T00:00:00Z", 3),
            [
                "2024-09-06T00:00:00+00:00",
                "2024-09-13T00:00:00+00:00",
                "2024-09-20T00:00:00+00:00"
            ]
        );
        // `?` is a star: the 1st only.
        assert_eq!(
            utc("0 0 1 * ?", "2024-09-01T00:00:00Z", 2),
            ["2024-10-01T00:00:00+00:00", "2024-11-01T00:00:00+00:00"]
        );
        // `*/2` is no star: the 1st or Sunday/Tuesday/Thursday/Saturday.
        // 2024-10-01 is a Tuesday.
        assert_eq!(
            utc("0 0 1 * */2", "2024-09-28T12:00:00Z", 3),
            [
                "2024-09-29T00:00:00+00:00",
                "2024-10-01T00:00:00+00:00",
                "2024-10-03T00:00:00+00:00"
            ]
        );
    }

    #[test]
    fn month_ends_and_leap_days() {
        // The 31st skips the months that lack one.
        assert_eq!(
            utc("0 0 31 * *", "2024-01-31T00:00:00Z", 3),
            [
                "2024-03-31T00:00:00+00:00",
                "2024-05-31T00:00:00+00:00",
                "2024-07-31T00:00:00+00:00"
            ]
        );
        assert_eq!(
            utc("0 12 29 2 *", "2024-03-01T00:00:00Z", 1),
            ["2028-02-29T12:00:00+00:00"]
        );
        // Never: nothing within five years.
        let never = Schedule::parse("59 23 30 2 *").unwrap();
        assert_eq!(never.next(ts("2024-01-01T00:00:00Z"), &TimeZone::UTC), None);
        // An empty list parses (as upstream) but never fires.
        let empty = Schedule::parse(", * * * *").unwrap();
        assert_eq!(empty.next(ts("2024-01-01T00:00:00Z"), &TimeZone::UTC), None);
    }

    #[test]
    fn descriptors() {
        let from = "2024-05-14T10:07:00Z";
        assert_eq!(utc("@yearly", from, 1), ["2025-01-01T00:00:00+00:00"]);
        assert_eq!(utc("@annually", from, 1), ["2025-01-01T00:00:00+00:00"]);
        assert_eq!(utc("@monthly", from, 1), ["2024-06-01T00:00:00+00:00"]);
        // 2024-05-19 is a Sunday.
        assert_eq!(utc("@weekly", from, 1), ["2024-05-19T00:00:00+00:00"]);
        assert_eq!(utc("@daily", from, 1), ["2024-05-15T00:00:00+00:00"]);
        assert_eq!(utc("@midnight", from, 1), ["2024-05-15T00:00:00+00:00"]);
        assert_eq!(utc("@hourly", from, 1), ["2024-05-14T11:00:00+00:00"]);
        // A constant delay from the given time, on whole seconds.
        assert_eq!(
            utc("@every 1h30m", "2024-05-14T10:07:00.5Z", 2),
            ["2024-05-14T11:37:00+00:00", "2024-05-14T13:07:00+00:00"]
        );
        assert_eq!(
            utc("@every 100ms", "2024-05-14T10:07:00Z", 1),
            ["2024-05-14T10:07:01+00:00"]
        );
    }

    #[test]
    fn zones_from_the_caller_or_a_tz_prefix() {
        let ny = zone("America/New_York");
        assert_eq!(
            nexts("0 9 * * *", "2024-05-14T12:00:00Z", &ny, 1),
            ["2024-05-14T09:00:00-04:00"]
        );
        // A TZ= prefix wins over the caller's zone.
        assert_eq!(
            nexts("TZ=Asia/Tokyo 0 9 * * *", "2024-05-14T12:00:00Z", &ny, 1),
            ["2024-05-15T09:00:00+09:00"]
        );
        assert_eq!(
            nexts("CRON_TZ=UTC  @daily", "2024-05-14T12:00:00Z", &ny, 1),
            ["2024-05-15T00:00:00+00:00"]
        );
    }

    #[test]
    fn daylight_saving_transitions_behave_as_upstream() {
        let ny = zone("America/New_York");
        // 2024-03-10 has no 02:30 in New York: that day is skipped.
        assert_eq!(
            nexts("30 2 * * *", "2024-03-09T12:00:00-05:00", &ny, 2),
            ["2024-03-11T02:30:00-04:00", "2024-03-12T02:30:00-04:00"]
        );
        // Hourly jobs run 23 times that day.
        assert_eq!(
            nexts("0 * * * *", "2024-03-10T00:30:00-05:00", &ny, 2),
            ["2024-03-10T01:00:00-05:00", "2024-03-10T03:00:00-04:00"]
        );
        // 2024-11-03 has 01:30 twice: both fire.
        assert_eq!(
            nexts("30 1 * * *", "2024-11-02T12:00:00-04:00", &ny, 3),
            [
                "2024-11-03T01:30:00-04:00",
                "2024-11-03T01:30:00-05:00",
                "2024-11-04T01:30:00-05:00"
            ]
        );
        // Southern hemisphere: Sydney springs forward on 2024-10-06 at 02:00.
        let syd = zone("Australia/Sydney");
        assert_eq!(
            nexts("@daily", "2024-10-05T12:00:00+10:00", &syd, 2),
            ["2024-10-06T00:00:00+10:00", "2024-10-07T00:00:00+11:00"]
        );
        // Day-of-month search across a midnight that does not exist
        // (São Paulo, 2018-11-04 00:00 → 01:00): it lands on 01:00 that day.
        let sp = zone("America/Sao_Paulo");
        assert_eq!(
            nexts("0 * 4 11 *", "2018-11-01T12:00:00-03:00", &sp, 1),
            ["2018-11-04T01:00:00-02:00"]
        );
    }

    #[test]
    fn errors_carry_robfigs_messages() {
        assert_eq!(err(""), "empty spec string");
        assert_eq!(
            err("* * * *"),
            "expected exactly 5 fields, found 4: [* * * *]"
        );
        assert_eq!(
            err("0 * * * * *"),
            "expected exactly 5 fields, found 6: [0 * * * * *]"
        );
        assert_eq!(
            err("60 * * * *"),
            "end of range (60) above maximum (59): 60"
        );
        assert_eq!(err("* * * * 7"), "end of range (7) above maximum (6): 7");
        assert_eq!(
            err("* * 0 * *"),
            "beginning of range (0) below minimum (1): 0"
        );
        assert_eq!(
            err("5-1 * * * *"),
            "beginning of range (5) beyond end of range (1): 5-1"
        );
        assert_eq!(
            err("*/0 * * * *"),
            "step of range should be a positive number: */0"
        );
        assert_eq!(err("1-2-3 * * * *"), "too many hyphens: 1-2-3");
        assert_eq!(err("*/2/3 * * * *"), "too many slashes: */2/3");
        assert_eq!(
            err("x * * * *"),
            "failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax"
        );
        assert_eq!(
            err("* * L * *"),
            "failed to parse int from L: strconv.Atoi: parsing \"L\": invalid syntax"
        );
        assert_eq!(err("@reboot"), "unrecognized descriptor: @reboot");
        assert_eq!(err("@Daily"), "unrecognized descriptor: @Daily");
        assert_eq!(
            err("@every Xm"),
            "failed to parse duration @every Xm: time: invalid duration \"Xm\""
        );
        assert_eq!(
            err("@every 5"),
            "failed to parse duration @every 5: time: missing unit in duration \"5\""
        );
        assert_eq!(
            err("TZ=Mars/Olympus 0 * * * *"),
            "provided bad location Mars/Olympus: unknown time zone Mars/Olympus"
        );
    }

    #[test]
    fn zone_names_load_as_go_loads_them() {
        assert!(load_location("Europe/Paris").unwrap().is_some());
        assert_eq!(load_location("").unwrap(), Some(TimeZone::UTC));
        assert_eq!(load_location("UTC").unwrap(), Some(TimeZone::UTC));
        assert_eq!(load_location("Local").unwrap(), None);
        // Case matters, as it does for Go reading zoneinfo files.
        assert_eq!(
            load_location("europe/paris").unwrap_err().to_string(),
            "unknown time zone europe/paris"
        );
        assert_eq!(
            load_location("../etc/passwd").unwrap_err(),
            ZoneError::InvalidName
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_go_duration(".5m"), Ok(30_000_000_000));
        assert_eq!(parse_go_duration("-2ms"), Ok(-2_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("1d")
            .unwrap_err()
            .contains("unknown unit \"d\""));
        assert!(parse_go_duration("9999999999h").is_err());
    }
}
