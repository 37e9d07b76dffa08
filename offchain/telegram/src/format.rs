//! Short, readable replies: HTML with monospace tables (`<pre>`), everything escaped.

use kronos_common::{Decimal, Rounding};

/// Escapes text for Telegram's HTML parse mode.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A monospace table: columns padded to their widest cell, numbers right-aligned.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let n = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let numeric = |c: &str| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit() || "+-.%".contains(ch));
    // A column whose cells are all numbers is right-aligned, header included.
    let right: Vec<bool> = (0..n)
        .map(|i| {
            let cells: Vec<&String> =
                rows.iter().filter_map(|r| r.get(i)).filter(|c| !c.is_empty() && c.as_str() != "-").collect();
            !cells.is_empty() && cells.iter().all(|c| numeric(c))
        })
        .collect();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = width[i] - c.chars().count();
                if right[i] {
                    format!("{}{c}", " ".repeat(pad))
                } else {
                    format!("{c}{}", " ".repeat(pad))
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(header.to_vec())];
    for r in rows {
        out.push(line(r.iter().map(String::as_str).collect()));
    }
    format!("<pre>{}</pre>", esc(&out.join("\n")))
}

/// A decimal string for display: rounded half away from zero to at most `places` decimals, trailing zeros
/// dropped, never "-0" (3.1490 → "3.15", -0.006 → "-0.01", -0.004 → "0"). Text that is not a decimal number
/// (e.g. "-") is shown as it is.
pub fn short(s: &str, places: usize) -> String {
    let Ok(d) = s.trim().parse::<Decimal>() else { return s.to_string() };
    num(&d, places)
}

/// [`short`] for a [`Decimal`].
pub fn num(d: &Decimal, places: usize) -> String {
    let places = places.min(kronos_common::decimal::MAX_SCALE as usize) as u8;
    let r = if d.scale() > places { d.rescale(places, Rounding::HalfUp).unwrap_or(*d) } else { *d };
    if r.is_zero() {
        return "0".into();
    }
    r.normalized().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_escape() {
        let t = table(&["sym", "qty"], &[vec!["BTC<x>".into(), "0.05".into()], vec!["E".into(), "-12.5".into()]]);
        assert_eq!(t, "<pre>sym       qty\nBTC&lt;x&gt;   0.05\nE       -12.5</pre>");
        assert_eq!(short("65000.12345678", 2), "65000.12");
        assert_eq!(short("1.50000", 4), "1.5");
        assert_eq!(short("7.000", 2), "7");
    }

    /// Issue 14, item 11: numbers are rounded, not truncated, and a value that rounds to zero is "0", not "-0".
    #[test]
    fn numbers_are_rounded_not_truncated_and_never_minus_zero() {
        assert_eq!(short("3.1490", 2), "3.15");
        assert_eq!(short("3.145", 2), "3.15");
        assert_eq!(short("3.144", 2), "3.14");
        assert_eq!(short("-0.006", 2), "-0.01");
        assert_eq!(short("-0.004", 2), "0");
        assert_eq!(short("-0.0000", 4), "0");
        assert_eq!(short("0.000", 4), "0");
        assert_eq!(short("-12.5", 2), "-12.5");
        assert_eq!(short("65000", 2), "65000");
        assert_eq!(short("1.62549", 4), "1.6255");
        assert_eq!(short("-", 2), "-");
        assert_eq!(short("n/a", 2), "n/a");
    }
}
