//! Resource quantities (`resource.Quantity`) as the scheduler reads them.
//!
//! Upstream parses a quantity into an exact decimal and the scheduler then
//! asks for `Value()` (bytes, counts) or `MilliValue()` (cpu). Both round
//! *up* (away from zero) to the integer, so `"0.5m"` cpu is 1 milli-cpu and
//! `"1.5"` bytes is 2. This module computes those two numbers exactly from
//! the text, without an intermediate float:
//!
//! * the number: optional sign, digits, optional `.` and digits (`"1."`,
//!   `".5"` are accepted, as upstream does);
//! * the suffix: binary SI (`Ki` `Mi` `Gi` `Ti` `Pi` `Ei`), decimal SI
//!   (`n` `u` `m` `` `k` `M` `G` `T` `P` `E`) or a decimal exponent
//!   (`e3`, `E-2`; note `"1E"` is exa and `"1E3"` is a thousand).
//!
//! Values beyond `i64` saturate at `i64::MAX` (upstream caps binary-SI
//! quantities at 2^63-1 and has no sensible `Value()` beyond it either).

use std::fmt;

/// Why a quantity string was rejected (upstream `ErrFormatWrong` /
/// `ErrSuffix`, with the offending text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantityError {
    pub text: String,
    pub reason: &'static str,
}

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "quantity {:?}: {}", self.text, self.reason)
    }
}

impl std::error::Error for QuantityError {}

/// A parsed quantity: `sign * mantissa * 10^exp10 * 2^exp2`, exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    /// Significant digits (integer and fraction parts concatenated),
    /// truncated to 30 digits; `inexact` records dropped non-zero digits.
    mantissa: u128,
    inexact: bool,
    exp10: i32,
    exp2: u32,
}

const FORMAT: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
const SUFFIX: &str = "unable to parse quantity's suffix";

impl Quantity {
    /// Upstream `resource.ParseQuantity`.
    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        let err = |reason| QuantityError {
            text: text.to_string(),
            reason,
        };
        if text.is_empty() {
            return Err(err(FORMAT));
        }
        let b = text.as_bytes();
        let mut pos = 0;
        let mut negative = false;
        match b[0] {
            b'+' => pos = 1,
            b'-' => {
                negative = true;
                pos = 1
            }
            _ => {}
        }
        let int_start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            pos += 1;
        }
        let int_digits = &text[int_start..pos];
        let mut frac_digits = "";
        if pos < b.len() && b[pos] == b'.' {
            pos += 1;
            let fs = pos;
            while pos < b.len() && b[pos].is_ascii_digit() {
                pos += 1;
            }
            frac_digits = &text[fs..pos];
        }
        if int_start == pos {
            // Neither digits nor a decimal point: "", "+", "Ki".
            return Err(err(FORMAT));
        }
        // The suffix: letters from the allowed set, then an optional sign
        // and digits (only meaningful for exponents).
        let suffix_start = pos;
        while pos < b.len() && b"eEinumkKMGTP".contains(&b[pos]) {
            pos += 1;
        }
        if pos < b.len() && (b[pos] == b'+' || b[pos] == b'-') {
            pos += 1;
        }
        while pos < b.len() && b[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos != b.len() {
            return Err(err(FORMAT));
        }
        let suffix = &text[suffix_start..];
        let (exp10_suffix, exp2) = match suffix {
            "" => (0, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            s if s.len() > 1 && (s.starts_with('e') || s.starts_with('E')) => {
                match s[1..].parse::<i32>() {
                    Ok(e) => (e, 0),
                    Err(_) => return Err(err(SUFFIX)),
                }
            }
            _ => return Err(err(SUFFIX)),
        };
        // Concatenate the digits into a mantissa, keeping at most 30
        // significant digits (more cannot change Value()/MilliValue() except
        // through the "any non-zero digit dropped" flag).
        let mut mantissa: u128 = 0;
        let mut significant = 0u32;
        let mut inexact = false;
        let mut exp10: i32 = exp10_suffix;
        for (i, c) in int_digits.bytes().chain(frac_digits.bytes()).enumerate() {
            let d = u128::from(c - b'0');
            let in_fraction = i >= int_digits.len();
            if significant >= 30 {
                if d != 0 {
                    inexact = true;
                }
                if !in_fraction {
                    exp10 = exp10.saturating_add(1); // a dropped integer digit still scales
                }
                continue;
            }
            mantissa = mantissa * 10 + d;
            if mantissa != 0 {
                significant += 1;
            }
            if in_fraction {
                exp10 = exp10.saturating_sub(1);
            }
        }
        Ok(Quantity {
            negative: negative && (mantissa != 0 || inexact),
            mantissa,
            inexact,
            exp10,
            exp2,
        })
    }

    /// The value scaled by `10^scale`, rounded up (away from zero) to an
    /// integer and saturated to the `i64` range.
    fn scaled(&self, scale: i32) -> i64 {
        if self.mantissa == 0 && !self.inexact {
            return 0;
        }
        let mut num: u128 = self.mantissa;
        let mut overflow = false;
        let mut mul = |n: u128, by: u128| -> u128 {
            match n.checked_mul(by) {
                Some(v) => v,
                None => {
                    overflow = true;
                    u128::MAX
                }
            }
        };
        num = mul(num, 1u128 << self.exp2.min(120));
        let e = self.exp10.saturating_add(scale);
        let (mut magnitude, exact_division) = if e >= 0 {
            let mut n = num;
            for _ in 0..e {
                n = mul(n, 10);
                if n == u128::MAX {
                    break;
                }
            }
            (n, true)
        } else {
            let div_exp = e.unsigned_abs();
            if div_exp > 38 {
                (0, num == 0)
            } else {
                let d = 10u128.pow(div_exp);
                (num / d, num % d == 0)
            }
        };
        if !exact_division || (self.inexact && e < 0) || (self.inexact && magnitude == 0) {
            magnitude = magnitude.saturating_add(1);
        }
        if overflow || magnitude > i64::MAX as u128 {
            return if self.negative { i64::MIN } else { i64::MAX };
        }
        let m = magnitude as i64;
        if self.negative {
            -m
        } else {
            m
        }
    }

    /// Upstream `Quantity.Value()`: the integer value, rounded up.
    pub fn value(&self) -> i64 {
        self.scaled(0)
    }

    /// Upstream `Quantity.MilliValue()`: the value in thousandths, rounded up.
    pub fn milli_value(&self) -> i64 {
        self.scaled(3)
    }
}

/// Parses a JSON quantity: a string, or a JSON number taken by its text
/// (as upstream's `Quantity.UnmarshalJSON` does).
pub fn parse_json(v: &serde_json::Value) -> Result<Quantity, QuantityError> {
    match v {
        serde_json::Value::String(s) => Quantity::parse(s.trim()),
        serde_json::Value::Number(n) => Quantity::parse(&n.to_string()),
        other => Err(QuantityError {
            text: other.to_string(),
            reason: "a quantity must be a string or a number",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> i64 {
        Quantity::parse(s).unwrap().value()
    }
    fn m(s: &str) -> i64 {
        Quantity::parse(s).unwrap().milli_value()
    }

    #[test]
    fn cpu_forms() {
        for (text, milli) in [
            ("100m", 100),
            ("1", 1000),
            ("1.5", 1500),
            ("0.1", 100),
            (".5", 500),
            ("1.", 1000),
            ("0.5m", 1), // rounds up
            ("0.0001", 1),
            ("2k", 2_000_000),
            ("250000u", 250),
            ("1e3", 1_000_000),
            ("1E-3", 1),
            ("+3", 3000),
            ("0", 0),
            ("0.000", 0),
            ("100n", 1),
        ] {
            assert_eq!(m(text), milli, "{text}");
        }
    }

    #[test]
    fn memory_forms() {
        for (text, bytes) in [
            ("128Mi", 128 * 1024 * 1024),
            ("1G", 1_000_000_000),
            ("1Gi", 1 << 30),
            ("1e3", 1000),
            ("1E3", 1000),
            ("1E", 1_000_000_000_000_000_000),
            ("1.5Ki", 1536),
            ("1.0001", 2), // Value() rounds up
            ("0.5", 1),
            ("100m", 1),
            ("1000m", 1),
            ("1001m", 2),
            ("12345", 12345),
            ("1Ei", 1 << 60),
            ("8Ei", i64::MAX), // saturates (upstream caps at 2^63-1)
            ("1e30", i64::MAX),
            ("1e99999", i64::MAX),
            ("1e-99999", 1),
            ("-1", -1),
            ("-1.5", -2), // away from zero
        ] {
            assert_eq!(v(text), bytes, "{text}");
        }
    }

    #[test]
    fn many_digits() {
        assert_eq!(v("0.000000000000000000000000000000000000000001"), 1);
        assert_eq!(v("1234567890123456789012345678901234567890"), i64::MAX);
        assert_eq!(
            v("100000000000000000000000000000000000.0000000001e-30"),
            100_001
        );
        assert_eq!(v("000000000000000000000000000000000000000012"), 12);
    }

    #[test]
    fn rejects() {
        for text in [
            "",
            "+",
            "-",
            "Ki",
            "1KiB",
            "1 Gi",
            "1e",
            "1Kb",
            "1.2.3",
            "abc",
            "1K",
            "1e3.5",
            "1ee3",
            "--1",
            "1e99999999999",
        ] {
            assert!(Quantity::parse(text).is_err(), "{text} should be rejected");
        }
    }

    #[test]
    fn json_numbers() {
        assert_eq!(
            parse_json(&serde_json::json!(2)).unwrap().milli_value(),
            2000
        );
        assert_eq!(
            parse_json(&serde_json::json!(0.25)).unwrap().milli_value(),
            250
        );
        assert_eq!(
            parse_json(&serde_json::json!("64Mi")).unwrap().value(),
            64 << 20
        );
        assert!(parse_json(&serde_json::json!(true)).is_err());
    }
}
