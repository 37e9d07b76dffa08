//! Short, readable replies: HTML with monospace tables (`<pre>`), everything escaped.

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

/// A decimal string shortened for display (at most `places` decimals, trailing zeros dropped).
pub fn short(s: &str, places: usize) -> String {
    match s.split_once('.') {
        Some((i, f)) => {
            let f: String = f.chars().take(places).collect();
            let f = f.trim_end_matches('0');
            if f.is_empty() {
                i.to_string()
            } else {
                format!("{i}.{f}")
            }
        }
        None => s.to_string(),
    }
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
}
