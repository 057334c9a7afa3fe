//! Go's text forms of times, durations and floats, as `encoding/json` writes
//! them for metav1.Time, metav1.MicroTime, metav1.Duration and `float64`.

use serde_json::{Number, Value};

/// Seconds from 0001-01-01T00:00:00Z to the Unix epoch: Go's zero
/// `time.Time`, which metav1.Time marshals as `null`.
const ZERO_TIME_UNIX: i64 = -62_135_596_800;

/// Beyond about three million years the calendar arithmetic below could
/// overflow; no real object carries such a timestamp.
const MAX_ABS_SECONDS: i64 = 100_000_000_000_000;

/// `time.Unix(seconds, nanos)` formatted as RFC 3339 in UTC, with `micros`
/// choosing six fractional digits (MicroTime) or none (Time). `None` when
/// the result is Go's zero time, which marshals as `null`. `Err` when the
/// time is too far out to format.
pub(super) fn rfc3339(seconds: i64, nanos: i64, micros: bool) -> Result<Option<String>, String> {
    // time.Unix normalises nanoseconds outside [0, 1e9).
    let seconds = seconds
        .checked_add(nanos.div_euclid(1_000_000_000))
        .filter(|s| s.unsigned_abs() <= MAX_ABS_SECONDS.unsigned_abs())
        .ok_or_else(|| format!("time {seconds}s is out of range"))?;
    let nanos = nanos.rem_euclid(1_000_000_000);
    if seconds == ZERO_TIME_UNIX && nanos == 0 {
        return Ok(None);
    }
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = String::with_capacity(32);
    // Go pads the year to four digits and keeps a sign for years before 0.
    if year < 0 {
        out.push('-');
    }
    out.push_str(&format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        year.unsigned_abs(),
        month,
        day,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    ));
    if micros {
        // Go's layout "05.000000" truncates, it does not round.
        out.push_str(&format!(".{:06}", nanos / 1000));
    }
    out.push('Z');
    Ok(Some(out))
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Go's `time.Duration.String()`: "1h0m0s", "1m30s", "1.5s", "500ms",
/// "1.5µs", "0s".
pub(super) fn duration(nanos: i64) -> String {
    let mut u = nanos.unsigned_abs();
    if u == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    if nanos < 0 {
        out.push('-');
    }
    if u < 1_000_000_000 {
        let (prec, unit) = match u {
            0..=999 => (0, "ns"),
            1_000..=999_999 => (3, "µs"),
            _ => (6, "ms"),
        };
        out.push_str(&fraction(u, prec));
        out.push_str(unit);
        return out;
    }
    let frac = fraction(u % 1_000_000_000, 9);
    u /= 1_000_000_000;
    let (hours, minutes, seconds) = (u / 3600, u / 60 % 60, u % 60);
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if u >= 60 {
        out.push_str(&format!("{minutes}m"));
    }
    // `frac` is "0" or "0.xxx"; the integer part comes from `seconds`.
    out.push_str(&seconds.to_string());
    out.push_str(frac.trim_start_matches('0'));
    out.push('s');
    out
}

/// `v / 10^prec` with the fraction's trailing zeros (and then a bare point)
/// dropped, as Go's fmtFrac + fmtInt do.
fn fraction(v: u64, prec: u32) -> String {
    let scale = 10u64.pow(prec);
    let (int, frac) = (v / scale, v % scale);
    if prec == 0 || frac == 0 {
        return int.to_string();
    }
    let digits = format!("{frac:0width$}", width = prec as usize);
    format!("{int}.{}", digits.trim_end_matches('0'))
}

/// A `float64` as the number Go's `encoding/json` output parses back to:
/// Go writes integral values below 1e21 without a fraction or exponent, so
/// they read back as integers. NaN and infinities are errors in Go too.
pub(super) fn float(v: f64) -> Result<Value, String> {
    if !v.is_finite() {
        return Err(format!("unsupported float value {v}"));
    }
    if v.fract() == 0.0 && v.abs() < 1e21 {
        if v >= i64::MIN as f64 && v < i64::MAX as f64 {
            return Ok(Value::from(v as i64));
        }
        if v >= 0.0 && v < u64::MAX as f64 {
            return Ok(Value::from(v as u64));
        }
    }
    Number::from_f64(v)
        .map(Value::Number)
        .ok_or_else(|| format!("unsupported float value {v}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_like_go() {
        assert_eq!(
            rfc3339(1_700_000_000, 0, false).unwrap().as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(
            rfc3339(0, 0, false).unwrap().as_deref(),
            Some("1970-01-01T00:00:00Z")
        );
        // Leap day, and MicroTime keeps (truncated) microseconds.
        assert_eq!(
            rfc3339(951_782_400, 123_456_789, true).unwrap().as_deref(),
            Some("2000-02-29T00:00:00.123456Z")
        );
        // Negative nanoseconds borrow a second, as time.Unix does.
        assert_eq!(
            rfc3339(10, -1_000, true).unwrap().as_deref(),
            Some("1970-01-01T00:00:09.999999Z")
        );
        assert_eq!(rfc3339(ZERO_TIME_UNIX, 0, false).unwrap(), None);
        assert_eq!(
            rfc3339(ZERO_TIME_UNIX - 86_400, 0, false)
                .unwrap()
                .as_deref(),
            Some("0000-12-31T00:00:00Z")
        );
        assert_eq!(
            rfc3339(ZERO_TIME_UNIX - 400 * 86_400, 0, false)
                .unwrap()
                .as_deref(),
            Some("-0001-11-28T00:00:00Z")
        );
        assert!(rfc3339(i64::MAX, 0, false).is_err());
    }

    #[test]
    fn durations_format_like_go() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(duration(90_000_000_000), "1m30s");
        assert_eq!(duration(1_500_000_000), "1.5s");
        assert_eq!(duration(5_000_000_000), "5s");
        assert_eq!(duration(500_000_000), "500ms");
        assert_eq!(duration(1_500), "1.5µs");
        assert_eq!(duration(7), "7ns");
        assert_eq!(duration(-61_000_000_001), "-1m1.000000001s");
        assert_eq!(duration(i64::MIN), "-2562047h47m16.854775808s");
    }

    #[test]
    fn floats_read_back_as_go_wrote_them() {
        assert_eq!(float(100.0).unwrap(), Value::from(100));
        assert_eq!(float(-2.0).unwrap(), Value::from(-2));
        assert_eq!(float(0.5).unwrap(), Value::from(0.5));
        assert_eq!(float(1e21).unwrap(), Value::from(1e21));
        assert!(float(f64::NAN).is_err());
        assert!(float(f64::INFINITY).is_err());
    }
}
