//! String formats upstream validates in custom resources.
//!
//! Kubernetes 1.33 strips every `format` not in its supported list before
//! validating (so `int32`, `int64`, `float`, `double` are never checked),
//! and kube-openapi's `strfmt.Default` registry validates the rest. Names
//! are compared with dashes removed (`date-time` is `datetime`).

use std::sync::OnceLock;

use super::regex::Regex;

/// Formats validated at compatibility version 1.33 (dash-less names).
const SUPPORTED: &[&str] = &[
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
];

/// Whether `format` survives upstream's stripping (and is thus checked).
pub(crate) fn is_supported(format: &str) -> bool {
    let n = format.replace('-', "");
    SUPPORTED.contains(&n.as_str())
}

/// Whether `s` is valid for the supported `format`.
pub(crate) fn validates(format: &str, s: &str) -> bool {
    match format.replace('-', "").as_str() {
        "bsonobjectid" => s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit()),
        "uri" => is_request_uri(s),
        "email" => is_email(s),
        "hostname" => is_hostname(s),
        "ipv4" => parse_ip_sloppy(s) && s.contains('.'),
        "ipv6" => s.contains(':') && s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => is_cidr(s),
        "mac" => is_mac(s),
        "uuid" => rx(&UUID, UUID_RX).is_some_and(|r| r.is_match(s)),
        "uuid3" => rx(&UUID3, UUID3_RX).is_some_and(|r| r.is_match(s)),
        "uuid4" => rx(&UUID4, UUID4_RX).is_some_and(|r| r.is_match(s)),
        "uuid5" => rx(&UUID5, UUID5_RX).is_some_and(|r| r.is_match(s)),
        "isbn" => is_isbn10(s) || is_isbn13(s),
        "isbn10" => is_isbn10(s),
        "isbn13" => is_isbn13(s),
        "creditcard" => is_credit_card(s),
        "ssn" => s.len() == 11 && rx(&SSN, SSN_RX).is_some_and(|r| r.is_match(s)),
        "hexcolor" => rx(&HEX, HEX_RX).is_some_and(|r| r.is_match(s)),
        "rgbcolor" => rx(&RGB, RGB_RX).is_some_and(|r| r.is_match(s)),
        "byte" => rx(&B64, B64_RX).is_some_and(|r| r.is_match(s)),
        "password" => true,
        "date" => is_date(s),
        "duration" => is_duration(s),
        "datetime" => is_date_time(s),
        _ => true,
    }
}

// Well-known patterns (go-openapi strfmt / govalidator semantics).
const UUID_RX: &str = "(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$";
const UUID3_RX: &str = "(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}$";
const UUID4_RX: &str =
    "(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$";
const UUID5_RX: &str =
    "(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$";
const SSN_RX: &str = r"^\d{3}[- ]?\d{2}[- ]?\d{4}$";
const HEX_RX: &str = "^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$";
const RGB_RX: &str = r"^rgb\(\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*,\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*,\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*\)$";
const B64_RX: &str =
    r"^(?:[A-Za-z0-9+\/]{4})*(?:[A-Za-z0-9+\/]{2}==|[A-Za-z0-9+\/]{3}=|[A-Za-z0-9+\/]{4})$";
const CC_RX: &str = r"^(?:4[0-9]{12}(?:[0-9]{3})?|5[1-5][0-9]{14}|6(?:011|5[0-9][0-9])[0-9]{12}|3[47][0-9]{13}|3(?:0[0-5]|[68][0-9])[0-9]{11}|(?:2131|1800|35\d{3})\d{11})$";
const DATE_TIME_RX: &str =
    r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$";

type Cell = OnceLock<Option<Regex>>;
static UUID: Cell = OnceLock::new();
static UUID3: Cell = OnceLock::new();
static UUID4: Cell = OnceLock::new();
static UUID5: Cell = OnceLock::new();
static SSN: Cell = OnceLock::new();
static HEX: Cell = OnceLock::new();
static RGB: Cell = OnceLock::new();
static B64: Cell = OnceLock::new();
static CC: Cell = OnceLock::new();
static DATE_TIME: Cell = OnceLock::new();

fn rx(cell: &'static Cell, pattern: &str) -> Option<&'static Regex> {
    cell.get_or_init(|| Regex::new(pattern).ok()).as_ref()
}

/// Go `time.Parse("2006-01-02", s)`.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (Some(y), Some(m), Some(d)) = (digits(0..4), digits(5..7), digits(8..10)) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// strfmt `IsDateTime`: a date, a 't', and a time with offset.
fn is_date_time(s: &str) -> bool {
    if s.len() < 4 {
        return false;
    }
    let lower = s.to_lowercase();
    let parts: Vec<&str> = lower.split('t').collect();
    if parts.len() < 2 || !is_date(parts[0]) {
        return false;
    }
    let time = parts[1];
    if !rx(&DATE_TIME, DATE_TIME_RX).is_some_and(|r| r.is_match(time)) {
        return false;
    }
    let (h, m, sec) = (&time[0..2], &time[3..5], &time[6..8]);
    h <= "23" && m <= "59" && sec <= "59"
}

/// strfmt `ParseDuration`: Go durations, or "<n> <unit>" sequences with
/// long unit names ("3 days", "1 week").
fn is_duration(s: &str) -> bool {
    if is_go_duration(s) {
        return true;
    }
    const UNITS: &[&[&str]] = &[
        &["ns", "nano"],
        &["us", "µs", "micro"],
        &["ms", "milli"],
        &["s", "sec"],
        &["m", "min"],
        &["h", "hr", "hour"],
        &["d", "day"],
        &["w", "wk", "week"],
    ];
    let chars: Vec<char> = s.chars().collect();
    let mut ok = false;
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && chars[i].is_ascii_digit() {
            i += 1;
        }
        let digits: String = chars[start..i].iter().collect();
        let mut j = i;
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        let ustart = j;
        while j < chars.len() && (chars[j].is_ascii_alphabetic() || chars[j] == 'µ') {
            j += 1;
        }
        if j == ustart {
            continue;
        }
        if digits.parse::<i64>().is_err() {
            return false;
        }
        let unit: String = chars[ustart..j].iter().collect::<String>().to_lowercase();
        for variants in UNITS {
            let last = variants.len() - 1;
            for (k, v) in variants.iter().enumerate() {
                if (k == last && unit.starts_with(v)) || unit.eq_ignore_ascii_case(v) {
                    ok = true;
                }
            }
        }
        i = j;
    }
    ok
}

/// Go `time.ParseDuration` syntax (value range not checked).
fn is_go_duration(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    if s == "0" {
        return true;
    }
    if s.is_empty() {
        return false;
    }
    let mut rest = s;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let mut frac_len = 0;
        let mut after = &rest[int_len..];
        if let Some(f) = after.strip_prefix('.') {
            frac_len = f.bytes().take_while(u8::is_ascii_digit).count();
            after = &f[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return false;
        }
        let unit_len = after
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(after.len(), |(i, _)| i);
        let unit = &after[..unit_len];
        if !["ns", "us", "µs", "μs", "ms", "s", "m", "h"].contains(&unit) {
            return false;
        }
        rest = &after[unit_len..];
    }
    true
}

/// k8s.io/utils/net `ParseIPSloppy`: IPv4 may have leading zeros.
fn parse_ip_sloppy(s: &str) -> bool {
    if s.contains(':') {
        return s.parse::<std::net::Ipv6Addr>().is_ok();
    }
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 3
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u16>().is_ok_and(|n| n <= 255)
        })
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let max = if ip.contains(':') { 128 } else { 32 };
    parse_ip_sloppy(ip)
        && !bits.is_empty()
        && bits.bytes().all(|b| b.is_ascii_digit())
        && bits.parse::<u32>().is_ok_and(|b| b <= max)
}

/// Go `net.ParseMAC`: 6, 8 or 20 octets, ':'/'-' pairs or '.' quads.
fn is_mac(s: &str) -> bool {
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    let ok_len = |octets: usize| matches!(octets, 6 | 8 | 20);
    if s.len() < 14 {
        return false;
    }
    let b = s.as_bytes();
    if b[2] == b':' || b[2] == b'-' {
        let sep = char::from(b[2]);
        let parts: Vec<&str> = s.split(sep).collect();
        return ok_len(parts.len()) && parts.iter().all(|p| hex(p, 2));
    }
    if b[4] == b'.' {
        let parts: Vec<&str> = s.split('.').collect();
        return ok_len(parts.len() * 2) && parts.iter().all(|p| hex(p, 4));
    }
    false
}

/// strfmt `IsHostname` (ASCII/Unicode letters, labels up to 63 chars).
fn is_hostname(s: &str) -> bool {
    if s.is_empty() || s.len() > 255 {
        return false;
    }
    let alnum = |c: char| c.is_alphanumeric() || (!c.is_ascii() && !c.is_whitespace());
    let labels: Vec<&str> = s.split('.').collect();
    if labels.iter().any(|l| l.len() > 63) {
        return false;
    }
    let label_ok = |l: &str| {
        let cs: Vec<char> = l.chars().collect();
        !cs.is_empty()
            && alnum(cs[0])
            && alnum(cs[cs.len() - 1])
            && cs.iter().all(|&c| alnum(c) || c == '-')
    };
    if labels.len() == 1 {
        // A single label may end in '-' per the upstream pattern.
        let cs: Vec<char> = s.chars().collect();
        return alnum(cs[0]) && cs.iter().all(|&c| alnum(c) || c == '-') && cs.len() <= 64;
    }
    let (tld, rest) = labels.split_last().map_or(("", &[][..]), |(t, r)| (*t, r));
    let tld_len = tld.chars().count();
    rest.iter().all(|l| label_ok(l))
        && (2..=63).contains(&tld_len)
        && tld.chars().all(|c| c.is_alphabetic())
}

/// Approximates Go `net/mail.ParseAddress`: `local@domain`, optionally as
/// `Name <local@domain>`.
fn is_email(s: &str) -> bool {
    let s = s.trim();
    let addr = match (s.find('<'), s.strip_suffix('>')) {
        (Some(i), Some(inner)) => &inner[i + 1..],
        (None, None) => s,
        _ => return false,
    };
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return false;
    };
    let atom = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c) || !c.is_ascii())
            && !p.starts_with('.')
            && !p.ends_with('.')
            && !p.contains("..")
    };
    let quoted = local.len() >= 2 && local.starts_with('"') && local.ends_with('"');
    (quoted || atom(local)) && (atom(domain) || (domain.starts_with('[') && domain.ends_with(']')))
}

/// Approximates Go `url.ParseRequestURI`: an absolute URI or an absolute
/// path, without spaces or control characters.
fn is_request_uri(s: &str) -> bool {
    if s.is_empty() || s.chars().any(|c| c.is_control() || c == ' ') {
        return false;
    }
    if s.starts_with('/') {
        return true;
    }
    let Some((scheme, _)) = s.split_once(':') else {
        return false;
    };
    let mut cs = scheme.chars();
    cs.next().is_some_and(|c| c.is_ascii_alphabetic())
        && cs.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

fn isbn_digits(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect()
}

fn is_isbn10(s: &str) -> bool {
    let d = isbn_digits(s);
    let b = d.as_bytes();
    if b.len() != 10
        || !b[..9].iter().all(u8::is_ascii_digit)
        || !(b[9].is_ascii_digit() || b[9] == b'X')
    {
        return false;
    }
    let mut sum = 0u32;
    for (i, &c) in b.iter().enumerate() {
        let v = if c == b'X' { 10 } else { u32::from(c - b'0') };
        sum += (i as u32 + 1) * v;
    }
    sum % 11 == 0
}

fn is_isbn13(s: &str) -> bool {
    let d = isbn_digits(s);
    let b = d.as_bytes();
    if b.len() != 13 || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut sum = 0u32;
    for (i, &c) in b[..12].iter().enumerate() {
        sum += u32::from(c - b'0') * if i % 2 == 0 { 1 } else { 3 };
    }
    (10 - sum % 10) % 10 == u32::from(b[12] - b'0')
}

/// govalidator `IsCreditCard`: non-digits ignored, issuer pattern, Luhn.
fn is_credit_card(s: &str) -> bool {
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    if !rx(&CC, CC_RX).is_some_and(|r| r.is_match(&digits)) {
        return false;
    }
    let mut sum = 0u32;
    let mut double = false;
    for c in digits.bytes().rev() {
        let mut v = u32::from(c - b'0');
        if double {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
        double = !double;
    }
    sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_strfmt() {
        assert!(validates("date-time", "2024-02-29T12:00:00Z"));
        assert!(validates("date-time", "2024-01-01t23:59:59.5+02:00"));
        assert!(!validates("date-time", "2023-02-29T12:00:00Z"));
        assert!(!validates("date-time", "2024-01-01T24:00:00Z"));
        assert!(validates("date", "2024-12-31"));
        assert!(!validates("date", "2024-13-01"));
        assert!(validates("duration", "1h30m"));
        assert!(validates("duration", "3 days"));
        assert!(!validates("duration", "soon"));
        assert!(validates("uuid", "123E4567-e89b-12d3-a456-426614174000"));
        assert!(!validates("uuid4", "123e4567-e89b-12d3-a456-426614174000"));
        assert!(validates("ipv4", "010.0.0.1"));
        assert!(!validates("ipv4", "::1"));
        assert!(validates("ipv6", "fe80::1"));
        assert!(validates("cidr", "10.0.0.0/8"));
        assert!(!validates("cidr", "10.0.0.0/33"));
        assert!(validates("mac", "01:23:45:67:89:ab"));
        assert!(validates("hostname", "example.com"));
        assert!(!validates("hostname", "exa mple.com"));
        assert!(validates("byte", "aGVsbG8="));
        assert!(!validates("byte", "hello"));
        assert!(validates("isbn10", "0-321-75104-3"));
        assert!(validates("creditcard", "4111 1111 1111 1111"));
        assert!(validates("email", "Jane <jane@example.com>"));
        assert!(!validates("email", "jane"));
        assert!(is_supported("date-time"));
        assert!(!is_supported("int32"));
    }
}
