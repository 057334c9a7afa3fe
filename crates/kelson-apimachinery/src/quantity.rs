//! Kubernetes `resource.Quantity`: parsing, exact arithmetic, comparison and
//! the canonical string form, matching k8s.io/apimachinery/pkg/api/resource.
//!
//! A value is held exactly as `mantissa × 10^exponent` (i128 mantissa, no
//! floats). Like upstream, parsing rounds every value up (away from zero) to
//! nano precision and caps BinarySI values at 2^63-1. Upstream uses unbounded
//! decimals; here inputs needing more than 38 significant digits after that
//! rounding are rejected with [`QuantityError::OutOfRange`].

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// The regular expression upstream quotes in its "wrong format" error.
const SPLIT_RE: &str = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";

/// Errors from parsing a quantity; messages are upstream's, since the API
/// server shows them to users when decoding fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("quantities must match the regular expression '{}'", SPLIT_RE)]
    FormatWrong,
    #[error("unable to parse numeric part of quantity")]
    Numeric,
    #[error("unable to parse quantity's suffix")]
    Suffix,
    /// Upstream would accept these (it uses arbitrary precision); we cannot
    /// represent them exactly, so we refuse rather than lose precision.
    #[error("quantity is out of the supported range")]
    OutOfRange,
}

/// How a quantity is written; parsing remembers it and canonical output keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `12M`, `500m`, `3`.
    DecimalSI,
    /// `12Mi` (powers of 1024).
    BinarySI,
    /// `12e6`.
    DecimalExponent,
}

impl Format {
    /// Upstream's name of the format (`"DecimalSI"` …).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::DecimalSI => "DecimalSI",
            Format::BinarySI => "BinarySI",
            Format::DecimalExponent => "DecimalExponent",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Quantity {
    /// Value is `mantissa × 10^exponent`; the mantissa carries no factor of
    /// ten unless it is zero (then exponent is 0), so equal values are equal
    /// structs apart from format.
    mantissa: i128,
    exponent: i64,
    format: Format,
    /// The input string when upstream's parser would keep it verbatim (its
    /// "already canonical" shortcut); upstream then serialises that string.
    original: Option<String>,
}

/// 2^63 - 1: upstream's cap for BinarySI values.
const MAX_ALLOWED: i128 = i64::MAX as i128;

fn pow10(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

impl Quantity {
    fn from_parts(mantissa: i128, exponent: i64, format: Format) -> Quantity {
        let (mut m, mut e) = (mantissa, exponent);
        if m == 0 {
            e = 0;
        } else {
            while m % 10 == 0 {
                m /= 10;
                e += 1;
            }
        }
        Quantity {
            mantissa: m,
            exponent: e,
            format,
            original: None,
        }
    }

    /// Parses a quantity string as upstream's `resource.ParseQuantity`.
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        if s.is_empty() {
            return Err(QuantityError::FormatWrong);
        }
        if s == "0" {
            return Ok(Quantity {
                original: Some("0".to_string()),
                ..Quantity::from_parts(0, 0, Format::DecimalSI)
            });
        }
        let scan = scan(s)?;
        let (base, exp, mut format) = interpret_suffix(scan.suffix).ok_or(QuantityError::Suffix)?;

        // Upstream's fast path keeps the input verbatim when it already looks
        // canonical; reproduce its exact conditions so serialisation matches.
        let original = keep_original(s, &scan, base, exp);

        let mut digits: String = format!("{}{}", scan.num, scan.denom);
        let mut exp10: i64 = -(scan.denom.len() as i64);
        let mut shift2: u32 = 0;
        if base == 10 {
            exp10 += exp;
        } else {
            shift2 = exp as u32;
        }
        // Leading zeros carry no value; trailing zeros move into the exponent.
        let trimmed = digits.trim_start_matches('0').len();
        digits.drain(..digits.len() - trimmed);
        while digits.ends_with('0') {
            digits.pop();
            exp10 += 1;
        }
        let mut magnitude: i128;
        if digits.is_empty() {
            magnitude = 0;
            exp10 = 0;
        } else if shift2 == 0 {
            // Decimal: round up to nano precision at the digit level first.
            if exp10 < -9 {
                let drop = usize::try_from(-9 - exp10).unwrap_or(usize::MAX);
                if drop >= digits.len() {
                    digits = "1".to_string();
                } else {
                    digits.truncate(digits.len() - drop);
                    digits = increment_digits(&digits);
                }
                exp10 = -9;
            }
            if digits.len() > 38 {
                return Err(QuantityError::OutOfRange);
            }
            magnitude = digits.parse::<i128>().map_err(|_| QuantityError::Numeric)?;
        } else {
            if digits.len() > 38 {
                return Err(QuantityError::OutOfRange);
            }
            let d: i128 = digits.parse().map_err(|_| QuantityError::Numeric)?;
            match d.checked_mul(1i128 << shift2) {
                Some(v) => {
                    magnitude = v;
                    if exp10 < -9 {
                        // Round up to nano: ceil(v / 10^(-9-exp10)).
                        let k = u32::try_from(-9 - exp10).unwrap_or(u32::MAX);
                        magnitude = match pow10(k) {
                            Some(div) => v / div + i128::from(v % div != 0),
                            None => 1,
                        };
                        exp10 = -9;
                    }
                }
                None if exp10 >= -9 => {
                    // At least ~1.7e29: far beyond the cap applied below.
                    magnitude = MAX_ALLOWED;
                    exp10 = 0;
                }
                None => return Err(QuantityError::OutOfRange),
            }
        }
        if format == Format::BinarySI && magnitude != 0 {
            let over = Quantity::from_parts(magnitude, exp10, format).cmp(&Quantity::from_parts(
                MAX_ALLOWED,
                0,
                format,
            )) == Ordering::Greater;
            if over {
                magnitude = MAX_ALLOWED;
                exp10 = 0;
            }
            // Non-zero values below one cannot be written in binary units.
            let below_one =
                Quantity::from_parts(magnitude, exp10, format) < Quantity::from_parts(1, 0, format);
            if below_one {
                format = Format::DecimalSI;
            }
        }
        let signed = if scan.positive { magnitude } else { -magnitude };
        let mut q = Quantity::from_parts(signed, exp10, format);
        q.original = original;
        Ok(q)
    }

    /// A quantity of `milli / 1000`, like upstream `NewMilliQuantity`.
    pub fn from_milli(milli: i128, format: Format) -> Quantity {
        Quantity::from_parts(milli, -3, format)
    }

    /// The format this quantity was parsed with (or inherited).
    pub fn format(&self) -> Format {
        self.format
    }

    /// Value scaled by 10^-`scale`, rounded away from zero like upstream's
    /// int64 path (`ScaledValue`); saturates instead of overflowing.
    fn scaled_value(&self, scale: i64) -> i128 {
        if self.mantissa == 0 {
            return 0;
        }
        let shift = self.exponent - scale;
        if shift >= 0 {
            let factor = u32::try_from(shift).ok().and_then(pow10);
            match factor.and_then(|f| self.mantissa.checked_mul(f)) {
                Some(v) => v,
                None if self.mantissa > 0 => i128::MAX,
                None => i128::MIN,
            }
        } else {
            let sign = self.mantissa.signum();
            match u32::try_from(-shift).ok().and_then(pow10) {
                Some(div) => {
                    let q = self.mantissa / div;
                    if self.mantissa % div != 0 {
                        q + sign
                    } else {
                        q
                    }
                }
                None => sign,
            }
        }
    }

    /// Value × 1000, rounded up (away from zero) as upstream `MilliValue`.
    pub fn milli_value(&self) -> i128 {
        self.scaled_value(-3)
    }

    /// Integer value, rounded up (away from zero) as upstream `Value`.
    pub fn value(&self) -> i128 {
        self.scaled_value(0)
    }

    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    pub fn is_negative(&self) -> bool {
        self.mantissa < 0
    }

    /// Exact sum; `None` only if it cannot be represented. As upstream, a zero
    /// left side takes the right side's format.
    pub fn checked_add(&self, other: &Quantity) -> Option<Quantity> {
        let format = if self.is_zero() {
            other.format
        } else {
            self.format
        };
        let e = self.exponent.min(other.exponent);
        let a = self.aligned(e)?;
        let b = other.aligned(e)?;
        Some(Quantity::from_parts(a.checked_add(b)?, e, format))
    }

    /// Exact difference; `None` only if it cannot be represented.
    pub fn checked_sub(&self, other: &Quantity) -> Option<Quantity> {
        let format = if self.is_zero() {
            other.format
        } else {
            self.format
        };
        let e = self.exponent.min(other.exponent);
        let a = self.aligned(e)?;
        let b = other.aligned(e)?;
        Some(Quantity::from_parts(a.checked_sub(b)?, e, format))
    }

    /// The mantissa re-expressed at a lower exponent `e`.
    fn aligned(&self, e: i64) -> Option<i128> {
        if self.mantissa == 0 {
            return Some(0);
        }
        let f = pow10(u32::try_from(self.exponent - e).ok()?)?;
        self.mantissa.checked_mul(f)
    }

    /// Upstream's canonical form: the largest suffix (or exponent) of the
    /// quantity's format that needs no fractional digits.
    pub fn canonical(&self) -> String {
        if self.mantissa == 0 {
            return "0".to_string();
        }
        match self.format {
            Format::DecimalSI | Format::DecimalExponent => self.decimal_canonical(self.format),
            Format::BinarySI => {
                let lo = Quantity::from_parts(-1024, 0, Format::DecimalSI);
                let hi = Quantity::from_parts(1024, 0, Format::DecimalSI);
                if *self > lo && *self < hi || self.exponent < 0 {
                    // Small or fractional values are shown in decimal rather than rounded.
                    return self.decimal_canonical(Format::DecimalSI);
                }
                let Some(mut n) = self.aligned(0) else {
                    return self.decimal_canonical(Format::DecimalSI);
                };
                let mut k = 0;
                while n % 1024 == 0 {
                    n /= 1024;
                    k += 1;
                }
                // Upstream emits no suffix when none exists for the power.
                let suffix = match k {
                    1 => "Ki",
                    2 => "Mi",
                    3 => "Gi",
                    4 => "Ti",
                    5 => "Pi",
                    6 => "Ei",
                    _ => "",
                };
                format!("{n}{suffix}")
            }
        }
    }

    fn decimal_canonical(&self, format: Format) -> String {
        let mut out = String::new();
        if self.mantissa < 0 {
            out.push('-');
        }
        out.push_str(&self.mantissa.unsigned_abs().to_string());
        let mut e = self.exponent;
        while e % 3 != 0 {
            out.push('0');
            e -= 1;
        }
        match format {
            Format::DecimalExponent => {
                if e != 0 {
                    out.push('e');
                    out.push_str(&e.to_string());
                }
            }
            _ => {
                // Upstream drops the suffix for exponents beyond E (10^18).
                out.push_str(match e {
                    -9 => "n",
                    -6 => "u",
                    -3 => "m",
                    3 => "k",
                    6 => "M",
                    9 => "G",
                    12 => "T",
                    15 => "P",
                    18 => "E",
                    _ => "",
                });
            }
        }
        out
    }

    /// What upstream's `String()`/`MarshalJSON` emits: the input verbatim when
    /// its parser judged it canonical (so `"+1"` stays `"+1"` and `"1.500"`
    /// stays `"1.500"`), otherwise [`Quantity::canonical`]. Arithmetic results
    /// always use the canonical form.
    pub fn to_upstream_string(&self) -> String {
        match &self.original {
            Some(s) => s.clone(),
            None => self.canonical(),
        }
    }

    /// Compares magnitudes exactly without overflow, via decimal digits.
    fn cmp_abs(&self, other: &Quantity) -> Ordering {
        let (a, b) = (self.mantissa.unsigned_abs(), other.mantissa.unsigned_abs());
        match (a == 0, b == 0) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            _ => {}
        }
        let (da, db) = (a.to_string(), b.to_string());
        let ma = da.len() as i64 + self.exponent;
        let mb = db.len() as i64 + other.exponent;
        if ma != mb {
            return ma.cmp(&mb);
        }
        // Same order of magnitude: compare digit strings padded to equal length.
        let width = da.len().max(db.len());
        let pa = format!("{da:0<width$}");
        let pb = format!("{db:0<width$}");
        pa.cmp(&pb)
    }
}

/// Adds one to a non-empty string of decimal digits.
fn increment_digits(d: &str) -> String {
    let mut bytes: Vec<u8> = d.bytes().collect();
    for b in bytes.iter_mut().rev() {
        if *b == b'9' {
            *b = b'0';
        } else {
            *b += 1;
            return String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    let mut out = String::from("1");
    out.push_str(&String::from_utf8_lossy(&bytes));
    out
}

/// Pieces of a quantity string as split by upstream's scanner.
struct Scan<'a> {
    positive: bool,
    /// Integer digits without leading zeros ("0" if none).
    num: &'a str,
    /// Fraction digits.
    denom: &'a str,
    suffix: &'a str,
}

/// Mirrors upstream's `parseQuantityString`, including what it tolerates
/// (`"1."`, `".5"`, `"-"`) and which malformed inputs are format errors.
fn scan(s: &str) -> Result<Scan<'_>, QuantityError> {
    let b = s.as_bytes();
    let end = b.len();
    let mut pos = 0;
    let mut positive = true;
    match b.first() {
        Some(b'-') => {
            positive = false;
            pos += 1;
        }
        Some(b'+') => pos += 1,
        _ => {}
    }
    let done = |num, denom| {
        Ok(Scan {
            positive,
            num,
            denom,
            suffix: "",
        })
    };
    while pos < end && b[pos] == b'0' {
        pos += 1;
    }
    if pos >= end {
        return done("0", "");
    }
    let start = pos;
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    let num = if pos == start { "0" } else { &s[start..pos] };
    if pos >= end {
        return done(num, "");
    }
    let mut denom = "";
    if b[pos] == b'.' {
        pos += 1;
        let dstart = pos;
        while pos < end && b[pos].is_ascii_digit() {
            pos += 1;
        }
        denom = &s[dstart..pos];
        if pos >= end {
            return done(num, denom);
        }
    }
    let suffix_start = pos;
    while pos < end && b"eEinumkKMGTP".contains(&b[pos]) {
        pos += 1;
    }
    if pos < end && (b[pos] == b'-' || b[pos] == b'+') {
        pos += 1;
    }
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos < end {
        return Err(QuantityError::FormatWrong);
    }
    Ok(Scan {
        positive,
        num,
        denom,
        suffix: &s[suffix_start..],
    })
}

/// Suffix → (base, exponent, format), as upstream's suffixer.
fn interpret_suffix(s: &str) -> Option<(u32, i64, Format)> {
    let dec = |e| Some((10, e, Format::DecimalSI));
    let bin = |e| Some((2, e, Format::BinarySI));
    match s {
        "" => dec(0),
        "n" => dec(-9),
        "u" => dec(-6),
        "m" => dec(-3),
        "k" => dec(3),
        "M" => dec(6),
        "G" => dec(9),
        "T" => dec(12),
        "P" => dec(15),
        "E" => dec(18),
        "Ki" => bin(10),
        "Mi" => bin(20),
        "Gi" => bin(30),
        "Ti" => bin(40),
        "Pi" => bin(50),
        "Ei" => bin(60),
        _ if s.len() > 1 && (s.starts_with('e') || s.starts_with('E')) => {
            // Upstream parses a 64-bit exponent, then truncates it to 32 bits;
            // refuse what would wrap rather than produce nonsense.
            let e: i64 = parse_go_int(&s[1..])?;
            if e < i64::from(i32::MIN) || e > i64::from(i32::MAX) {
                return None;
            }
            Some((10, e, Format::DecimalExponent))
        }
        _ => None,
    }
}

/// `strconv.ParseInt(s, 10, 64)`: optional sign then at least one digit.
fn parse_go_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Upstream's condition for storing the input string as the serialised form.
fn keep_original(s: &str, scan: &Scan<'_>, base: u32, exp: i64) -> Option<String> {
    let digits = scan.num.len() + scan.denom.len();
    let shifted = format!("{}{}", scan.num, scan.denom);
    let value: i64 = shifted.parse().ok()?;
    if base == 2 {
        if !scan.denom.is_empty() {
            return None;
        }
        let precision = 14 - digits as i64 - exp * 3 / 10;
        if precision < 0 {
            return None;
        }
        // Multiples of 8 may reduce to a larger binary suffix, so they are recomputed.
        return (value & 7 != 0).then(|| s.to_string());
    }
    if 18 - (digits as i64) < 0 {
        return None;
    }
    let scale = exp - scan.denom.len() as i64;
    if scale < -9 {
        return None;
    }
    let canonical_looking =
        scale % 3 == 0 && !shifted.ends_with("000") && !shifted.starts_with('0');
    canonical_looking.then(|| s.to_string())
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Quantity) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Quantity) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Quantity) -> Ordering {
        match (self.mantissa.signum(), other.mantissa.signum()) {
            (a, b) if a != b => a.cmp(&b),
            (-1, _) => other.cmp_abs(self),
            _ => self.cmp_abs(other),
        }
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Quantity, QuantityError> {
        Quantity::parse(s)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// Decodes a quantity from JSON as upstream's `UnmarshalJSON`: a string
/// (surrounding whitespace trimmed) or a number (its JSON text is parsed);
/// `null` yields zero. Anything else fails like a malformed string.
///
/// serde_json keeps floats as f64, so a float literal such as `1e3` arrives
/// re-printed (`1000.0`), which changes only the remembered format.
pub fn parse_json(v: &Value) -> Result<Quantity, QuantityError> {
    match v {
        Value::String(s) => Quantity::parse(s.trim()),
        Value::Number(n) => Quantity::parse(&n.to_string()),
        Value::Null => Ok(Quantity::from_parts(0, 0, Format::DecimalSI)),
        _ => Err(QuantityError::FormatWrong),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn canonical_forms_from_upstream_examples() {
        for (input, want) in [
            ("1000m", "1"),
            ("0.5", "500m"),
            ("1.5", "1500m"),
            ("1024Mi", "1Gi"),
            ("1.5Gi", "1536Mi"),
            ("100m", "100m"),
            ("2Gi", "2Gi"),
            ("500Ki", "500Ki"),
            ("0.1", "100m"),
            ("1e3", "1e3"),
            ("1E", "1E"),
            ("12E", "12E"),
            ("1000000000000000000", "1E"),
            ("12345678901234567890", "12345678901234567890"),
            ("1.3E+6", "1300e3"),
            ("1.2e3", "1200"),
            ("0.5e-9", "1e-9"),
            ("3.001n", "4n"),
            ("0.00000012345", "124n"),
            ("0.000000000001Ki", "2n"),
            ("9Ei", "9223372036854775807"),
            ("9223372036854775807.1", "9223372036854775807100m"),
            ("100.035Ki", "102435840m"),
            ("0.5Mi", "512Ki"),
            ("1.5Ki", "1536"),
            ("1025Ki", "1025Ki"),
            ("-1Ki", "-1Ki"),
            ("-0.5", "-500m"),
            ("50k", "50k"),
            ("1080m", "1080m"),
            ("1.08", "1080m"),
            ("0.001T", "1G"),
            ("1000e-12", "1e-9"),
            ("-9.01", "-9010m"),
            ("0Ki", "0"),
            ("1.", "1"),
            ("1.G", "1G"),
            (".001", "1m"),
            ("-", "0"),
            // Upstream has no suffix above E and silently drops it.
            ("1000E", "1"),
        ] {
            assert_eq!(q(input).canonical(), want, "input {input}");
        }
    }

    #[test]
    fn formats_are_remembered() {
        assert_eq!(q("1e3").format(), Format::DecimalExponent);
        assert_eq!(q("1Ki").format(), Format::BinarySI);
        assert_eq!(q("1k").format(), Format::DecimalSI);
        assert_eq!(q("0.000000000001Ki").format(), Format::DecimalSI);
        assert_eq!(q("0.5Ki").format(), Format::BinarySI);
    }

    #[test]
    fn invalid_strings_are_rejected_with_upstream_errors() {
        for s in [
            "", "1.1.M", "1+1.0M", "aoeu", " 1", "1 ", "1e3e", "1.5 Gi", "0.1am",
        ] {
            assert_eq!(
                Quantity::parse(s).unwrap_err(),
                QuantityError::FormatWrong,
                "{s}"
            );
        }
        for s in [
            "0.1mi", ".5i", "1i", "-3.01i", "-3.01e-", "1e", "1ki", "1Mi3", "1ee3",
        ] {
            assert_eq!(
                Quantity::parse(s).unwrap_err(),
                QuantityError::Suffix,
                "{s}"
            );
        }
        assert_eq!(
            QuantityError::FormatWrong.to_string(),
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        );
    }

    #[test]
    fn values_round_away_from_zero() {
        assert_eq!(q("100m").milli_value(), 100);
        assert_eq!(q("100m").value(), 1);
        assert_eq!(q("1.5").value(), 2);
        assert_eq!(q("-1.5").value(), -2);
        assert_eq!(q("1n").milli_value(), 1);
        assert_eq!(q("2Gi").value(), 2 * 1024 * 1024 * 1024);
        assert_eq!(q("12E").value(), 12_000_000_000_000_000_000);
        assert_eq!(q("1e100").value(), i128::MAX);
    }

    #[test]
    fn comparison_is_numeric_across_formats() {
        assert_eq!(q("1Ki"), q("1024"));
        assert_eq!(q("1000m"), q("1"));
        assert!(q("1k") < q("1Ki"));
        assert!(q("-1") < q("0"));
        assert!(q("-2") < q("-1"));
        assert!(q("999m") < q("1"));
        assert!(q("1e100") > q("9Ei"));
        assert!(q("12345678901234567890") > q("12345678901234567889"));
    }

    #[test]
    fn arithmetic_is_exact() {
        let sum = q("1.5").checked_add(&q("500m")).unwrap();
        assert_eq!(sum.canonical(), "2");
        let diff = q("1Gi").checked_sub(&q("512Mi")).unwrap();
        assert_eq!(diff.canonical(), "512Mi");
        // A zero left side adopts the right side's format.
        assert_eq!(q("0").checked_add(&q("1Ki")).unwrap().canonical(), "1Ki");
        assert!(q("0").checked_sub(&q("1")).unwrap().is_negative());
        assert!(q("1e100").checked_add(&q("1n")).is_none());
        assert_eq!(
            Quantity::from_milli(1500, Format::DecimalSI).canonical(),
            "1500m"
        );
        assert_eq!(
            Quantity::from_milli(2_048_000, Format::BinarySI).canonical(),
            "2Ki"
        );
    }

    #[test]
    fn upstream_string_keeps_verbatim_canonical_looking_input() {
        assert_eq!(q("+1").to_upstream_string(), "+1");
        assert_eq!(q("1.500").to_upstream_string(), "1.500");
        assert_eq!(q("1E3").to_upstream_string(), "1E3");
        assert_eq!(q("1E3").canonical(), "1e3");
        assert_eq!(q("1000m").to_upstream_string(), "1");
        assert_eq!(q("1024Mi").to_upstream_string(), "1Gi");
        assert_eq!(
            q("+1").checked_add(&q("0")).unwrap().to_upstream_string(),
            "1"
        );
    }

    #[test]
    fn json_strings_and_numbers() {
        assert_eq!(parse_json(&json!(" 2Gi ")).unwrap().canonical(), "2Gi");
        assert_eq!(parse_json(&json!(1)).unwrap().canonical(), "1");
        assert_eq!(parse_json(&json!(0.5)).unwrap().canonical(), "500m");
        assert!(parse_json(&json!(null)).unwrap().is_zero());
        assert_eq!(
            parse_json(&json!(true)).unwrap_err(),
            QuantityError::FormatWrong
        );
        assert_eq!(
            parse_json(&json!({})).unwrap_err(),
            QuantityError::FormatWrong
        );
    }

    #[test]
    fn display_and_from_str() {
        let v: Quantity = "2048Ki".parse().unwrap();
        assert_eq!(v.to_string(), "2Mi");
    }
}
