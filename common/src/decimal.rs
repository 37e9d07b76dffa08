//! Exact decimal numbers: an `i128` mantissa with an explicit number of decimal places.
//!
//! Prices from Chainlink (`int256` answers with `decimals()`) and quantities from exchanges (decimal strings such as
//! `"0.001"`) are carried as [`Decimal`] so that nothing is ever rounded by binary floating point. Every operation is
//! checked; rescaling names its rounding.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest number of decimal places a [`Decimal`] may carry.
pub const MAX_SCALE: u8 = 30;

/// How to round when a value loses decimal places.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// Toward zero (truncate).
    Down,
    /// Away from zero.
    Up,
    /// Toward negative infinity.
    Floor,
    /// Toward positive infinity.
    Ceil,
    /// To nearest, ties away from zero.
    HalfUp,
}

/// Why a decimal could not be parsed or computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("'{0}' is not a decimal number (expected digits with an optional sign and one '.')")]
    Parse(String),
    #[error("'{0}' has more than {MAX_SCALE} decimal places")]
    TooPrecise(String),
    #[error("decimal overflow")]
    Overflow,
    #[error("division by zero")]
    DivisionByZero,
}

/// An exact decimal: `mantissa / 10^scale`.
#[derive(Clone, Copy, Default)]
pub struct Decimal {
    mantissa: i128,
    scale: u8,
}

fn pow10(n: u8) -> Result<i128, DecimalError> {
    10i128.checked_pow(n as u32).ok_or(DecimalError::Overflow)
}

impl Decimal {
    /// Zero with no decimal places.
    pub const ZERO: Decimal = Decimal { mantissa: 0, scale: 0 };

    /// A value from a fixed-point integer, e.g. a Chainlink answer with its feed's decimals.
    pub fn from_fixed(mantissa: i128, scale: u8) -> Result<Self, DecimalError> {
        if scale > MAX_SCALE {
            return Err(DecimalError::Overflow);
        }
        Ok(Decimal { mantissa, scale })
    }

    /// An integer value.
    pub fn from_int(v: i128) -> Self {
        Decimal { mantissa: v, scale: 0 }
    }

    /// The raw mantissa.
    pub fn mantissa(&self) -> i128 {
        self.mantissa
    }

    /// The number of decimal places.
    pub fn scale(&self) -> u8 {
        self.scale
    }

    /// True when the value is zero.
    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// True when the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.mantissa < 0
    }

    /// The absolute value.
    pub fn abs(&self) -> Self {
        Decimal { mantissa: self.mantissa.abs(), scale: self.scale }
    }

    /// The value with its sign flipped.
    pub fn neg(&self) -> Self {
        Decimal { mantissa: -self.mantissa, scale: self.scale }
    }

    /// The same value with exactly `scale` decimal places, rounding as asked when places are dropped.
    pub fn rescale(&self, scale: u8, rounding: Rounding) -> Result<Self, DecimalError> {
        if scale > MAX_SCALE {
            return Err(DecimalError::Overflow);
        }
        match scale.cmp(&self.scale) {
            Ordering::Equal => Ok(*self),
            Ordering::Greater => {
                let f = pow10(scale - self.scale)?;
                let m = self.mantissa.checked_mul(f).ok_or(DecimalError::Overflow)?;
                Ok(Decimal { mantissa: m, scale })
            }
            Ordering::Less => {
                let f = pow10(self.scale - scale)?;
                Ok(Decimal { mantissa: div_round(self.mantissa, f, rounding)?, scale })
            }
        }
    }

    /// The fixed-point integer with `scale` decimal places (e.g. for on-chain amounts).
    pub fn to_fixed(&self, scale: u8, rounding: Rounding) -> Result<i128, DecimalError> {
        Ok(self.rescale(scale, rounding)?.mantissa)
    }

    fn aligned(a: &Self, b: &Self) -> Result<(i128, i128, u8), DecimalError> {
        let s = a.scale.max(b.scale);
        Ok((a.rescale(s, Rounding::Down)?.mantissa, b.rescale(s, Rounding::Down)?.mantissa, s))
    }

    /// `self + other`, exact.
    pub fn checked_add(&self, other: &Self) -> Result<Self, DecimalError> {
        let (a, b, s) = Self::aligned(self, other)?;
        Ok(Decimal { mantissa: a.checked_add(b).ok_or(DecimalError::Overflow)?, scale: s })
    }

    /// `self - other`, exact.
    pub fn checked_sub(&self, other: &Self) -> Result<Self, DecimalError> {
        let (a, b, s) = Self::aligned(self, other)?;
        Ok(Decimal { mantissa: a.checked_sub(b).ok_or(DecimalError::Overflow)?, scale: s })
    }

    /// `self * other`, rounded to `scale` places.
    pub fn checked_mul(&self, other: &Self, scale: u8, rounding: Rounding) -> Result<Self, DecimalError> {
        let m = self.mantissa.checked_mul(other.mantissa).ok_or(DecimalError::Overflow)?;
        let s = self.scale as u16 + other.scale as u16;
        if s > MAX_SCALE as u16 {
            // Reduce first so the intermediate scale stays representable.
            let drop = (s - MAX_SCALE as u16) as u8;
            let m = div_round(m, pow10(drop)?, rounding)?;
            return Decimal { mantissa: m, scale: MAX_SCALE }.rescale(scale, rounding);
        }
        Decimal { mantissa: m, scale: s as u8 }.rescale(scale, rounding)
    }

    /// `self / other`, rounded to `scale` places.
    pub fn checked_div(&self, other: &Self, scale: u8, rounding: Rounding) -> Result<Self, DecimalError> {
        if other.mantissa == 0 {
            return Err(DecimalError::DivisionByZero);
        }
        if scale > MAX_SCALE {
            return Err(DecimalError::Overflow);
        }
        // value = (a / 10^sa) / (b / 10^sb) = a * 10^(sb + scale - sa) / b, at `scale` places.
        let exp = other.scale as i32 + scale as i32 - self.scale as i32;
        let (num, den) = if exp >= 0 {
            (self.mantissa.checked_mul(pow10(exp as u8)?).ok_or(DecimalError::Overflow)?, other.mantissa)
        } else {
            (self.mantissa, other.mantissa.checked_mul(pow10((-exp) as u8)?).ok_or(DecimalError::Overflow)?)
        };
        Ok(Decimal { mantissa: div_round(num, den, rounding)?, scale })
    }

    /// The largest multiple of `step` not above `self` in magnitude (exchange step sizes and tick sizes).
    pub fn round_to_step(&self, step: &Self, rounding: Rounding) -> Result<Self, DecimalError> {
        if step.mantissa <= 0 {
            return Err(DecimalError::DivisionByZero);
        }
        let (a, b, s) = Self::aligned(self, step)?;
        let n = div_round(a, b, rounding)?;
        Ok(Decimal { mantissa: n.checked_mul(b).ok_or(DecimalError::Overflow)?, scale: s })
    }

    /// The smaller of two values.
    pub fn min(self, other: Self) -> Self {
        if self <= other {
            self
        } else {
            other
        }
    }

    /// The larger of two values.
    pub fn max(self, other: Self) -> Self {
        if self >= other {
            self
        } else {
            other
        }
    }

    /// A lossy `f64`, for display and for model inputs only — never for money.
    pub fn to_f64_lossy(&self) -> f64 {
        self.mantissa as f64 / 10f64.powi(self.scale as i32)
    }

    /// The shortest string for the value (no trailing zeros).
    pub fn normalized(&self) -> Self {
        let mut d = *self;
        while d.scale > 0 && d.mantissa % 10 == 0 {
            d.mantissa /= 10;
            d.scale -= 1;
        }
        d
    }
}

fn div_round(n: i128, d: i128, rounding: Rounding) -> Result<i128, DecimalError> {
    if d == 0 {
        return Err(DecimalError::DivisionByZero);
    }
    let q = n.checked_div(d).ok_or(DecimalError::Overflow)?;
    let r = n.checked_rem(d).ok_or(DecimalError::Overflow)?;
    if r == 0 {
        return Ok(q);
    }
    let negative = (n < 0) != (d < 0);
    let away = |q: i128| if negative { q - 1 } else { q + 1 };
    Ok(match rounding {
        Rounding::Down => q,
        Rounding::Up => away(q),
        Rounding::Floor => {
            if negative {
                q - 1
            } else {
                q
            }
        }
        Rounding::Ceil => {
            if negative {
                q
            } else {
                q + 1
            }
        }
        Rounding::HalfUp => {
            let twice = r.unsigned_abs().checked_mul(2).ok_or(DecimalError::Overflow)?;
            if twice >= d.unsigned_abs() {
                away(q)
            } else {
                q
            }
        }
    })
}

impl FromStr for Decimal {
    type Err = DecimalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let (neg, body) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let (int, frac) = match body.split_once('.') {
            Some((i, f)) => (i, f),
            None => (body, ""),
        };
        let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
            return Err(DecimalError::Parse(s.to_string()));
        }
        if frac.len() > MAX_SCALE as usize {
            return Err(DecimalError::TooPrecise(s.to_string()));
        }
        let mut m: i128 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            m = m.checked_mul(10).and_then(|m| m.checked_add((b - b'0') as i128)).ok_or(DecimalError::Overflow)?;
        }
        Ok(Decimal { mantissa: if neg { -m } else { m }, scale: frac.len() as u8 })
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let abs = self.mantissa.unsigned_abs().to_string();
        let sign = if self.mantissa < 0 { "-" } else { "" };
        if self.scale == 0 {
            return write!(f, "{sign}{abs}");
        }
        let s = self.scale as usize;
        let padded = if abs.len() <= s { format!("{}{}", "0".repeat(s + 1 - abs.len()), abs) } else { abs };
        let (i, fr) = padded.split_at(padded.len() - s);
        write!(f, "{sign}{i}.{fr}")
    }
}

impl fmt::Debug for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Decimal({self})")
    }
}

impl PartialEq for Decimal {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Decimal {}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        match Self::aligned(self, other) {
            Ok((a, b, _)) => a.cmp(&b),
            // Only reachable for values near i128::MAX at very different scales; compare by sign, then by
            // magnitude of the integer parts.
            Err(_) => {
                let ia = self.mantissa / 10i128.pow(self.scale as u32);
                let ib = other.mantissa / 10i128.pow(other.scale as u32);
                ia.cmp(&ib)
            }
        }
    }
}

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            I(i64),
        }
        match Raw::deserialize(d)? {
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
            Raw::I(i) => Ok(Decimal::from_int(i as i128)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints_exactly() {
        for s in ["0", "1", "-1", "0.001", "-0.5", "123456789.123456789", "0.10"] {
            assert_eq!(d(s).to_string(), s);
        }
        assert_eq!(d("+2.50").to_string(), "2.50");
        assert_eq!(d(".5").to_string(), "0.5");
        assert_eq!(d("5.").to_string(), "5");
    }

    #[test]
    fn rejects_garbage_with_the_input_named() {
        for s in ["", "-", "1e5", "1.2.3", "abc", "1,5", " . "] {
            let e = s.parse::<Decimal>().unwrap_err();
            assert!(e.to_string().contains(s.trim()) || s.trim().is_empty(), "{e}");
        }
        assert!(matches!("1.0000000000000000000000000000001".parse::<Decimal>(), Err(DecimalError::TooPrecise(_))));
    }

    #[test]
    fn compares_across_scales() {
        assert_eq!(d("1.50"), d("1.5"));
        assert!(d("0.1") > d("0.09"));
        assert!(d("-0.1") < d("0"));
        assert_eq!(d("2").max(d("2.01")), d("2.01"));
    }

    #[test]
    fn rescale_rounds_as_named() {
        assert_eq!(d("1.25").rescale(1, Rounding::Down).unwrap().to_string(), "1.2");
        assert_eq!(d("1.25").rescale(1, Rounding::HalfUp).unwrap().to_string(), "1.3");
        assert_eq!(d("-1.25").rescale(1, Rounding::HalfUp).unwrap().to_string(), "-1.3");
        assert_eq!(d("-1.21").rescale(1, Rounding::Floor).unwrap().to_string(), "-1.3");
        assert_eq!(d("-1.21").rescale(1, Rounding::Ceil).unwrap().to_string(), "-1.2");
        assert_eq!(d("1.21").rescale(1, Rounding::Up).unwrap().to_string(), "1.3");
        assert_eq!(d("1.2").rescale(4, Rounding::Down).unwrap().to_string(), "1.2000");
    }

    #[test]
    fn arithmetic_is_exact() {
        assert_eq!(d("0.1").checked_add(&d("0.2")).unwrap(), d("0.3"));
        assert_eq!(d("1").checked_sub(&d("0.001")).unwrap().to_string(), "0.999");
        assert_eq!(d("1.5").checked_mul(&d("0.2"), 2, Rounding::Down).unwrap().to_string(), "0.30");
        assert_eq!(d("1").checked_div(&d("3"), 4, Rounding::Down).unwrap().to_string(), "0.3333");
        assert_eq!(d("2").checked_div(&d("3"), 4, Rounding::HalfUp).unwrap().to_string(), "0.6667");
        assert_eq!(d("1").checked_div(&d("0"), 4, Rounding::Down), Err(DecimalError::DivisionByZero));
        assert_eq!(Decimal::from_fixed(i128::MAX, 0).unwrap().checked_add(&d("1")), Err(DecimalError::Overflow));
    }

    #[test]
    fn steps_and_ticks() {
        assert_eq!(d("0.12345").round_to_step(&d("0.001"), Rounding::Down).unwrap().to_string(), "0.12300");
        assert_eq!(d("101.37").round_to_step(&d("0.5"), Rounding::Down).unwrap(), d("101"));
        assert_eq!(d("101.37").round_to_step(&d("0.5"), Rounding::Up).unwrap(), d("101.5"));
    }

    #[test]
    fn chainlink_answers_round_trip() {
        let p = Decimal::from_fixed(6_543_210_987_654, 8).unwrap();
        assert_eq!(p.to_string(), "65432.10987654");
        assert_eq!(p.to_fixed(8, Rounding::Down).unwrap(), 6_543_210_987_654);
    }

    #[test]
    fn serde_uses_strings() {
        let v: Decimal = serde_json::from_str("\"12.50\"").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"12.50\"");
        let v: Decimal = serde_json::from_str("7").unwrap();
        assert_eq!(v, d("7"));
        assert!(serde_json::from_str::<Decimal>("\"x\"").is_err());
    }
}
