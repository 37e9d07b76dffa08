//! Normalising a raw item: UTF-8 and size checks, HTML stripped (feed summaries are HTML), entities decoded,
//! whitespace collapsed; the language tag reduced to its primary subtag; the fingerprints de-duplication uses.

use crate::item::Skip;

/// Text bytes above this are skipped (`too_long`) unless configured otherwise. 8 KiB holds any post and any
/// reasonable feed summary; a larger "post" is a scraped page.
pub const DEFAULT_MAX_TEXT_BYTES: usize = 8 * 1024;

/// The checked, cleaned text of a raw item.
pub fn text(raw: &[u8], max_bytes: usize) -> Result<String, Skip> {
    if raw.len() > max_bytes {
        return Err(Skip::TooLong);
    }
    let s = std::str::from_utf8(raw).map_err(|_| Skip::InvalidUtf8)?;
    let cleaned = collapse(&decode_entities(&strip_tags(s)));
    if cleaned.is_empty() {
        return Err(Skip::Empty);
    }
    Ok(cleaned)
}

/// Removes `<...>` tags (a `<br>`/`<p>` becomes a space) and `<script>`/`<style>` contents.
pub fn strip_tags(s: &str) -> String {
    if !s.contains('<') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('<') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if !after[1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '/' || c == '!') {
            // Not a tag ("a < b").
            out.push('<');
            rest = &after[1..];
            continue;
        }
        let Some(j) = after.find('>') else {
            // A lone '<' is text ("a < b").
            out.push_str(after);
            return out;
        };
        let tag = after[1..j].trim_start_matches('/').to_ascii_lowercase();
        let name: String = tag.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        rest = &after[j + 1..];
        if name == "script" || name == "style" {
            let close = format!("</{name}");
            match rest.to_ascii_lowercase().find(&close) {
                Some(k) => {
                    rest = &rest[k..];
                    rest = rest.find('>').map(|e| &rest[e + 1..]).unwrap_or("");
                }
                None => rest = "",
            }
        }
        out.push(' ');
    }
    out.push_str(rest);
    out
}

/// Decodes the common named entities and numeric ones (`&amp;`, `&#36;`, `&#x24;`); anything else is left as is.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let end = after[1..].find(|c: char| c == ';' || c.is_whitespace() || c == '&').map(|k| k + 1);
        let decoded = end.filter(|&e| after[e..].starts_with(';')).and_then(|e| {
            let name = &after[1..e];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" | "#39" => Some('\''),
                "nbsp" => Some(' '),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, e + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &after[len..];
            }
            None => {
                out.push('&');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whitespace runs (and control characters) become one space; trimmed.
pub fn collapse(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for w in s.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// `en-US` → `en`; missing or malformed → `und` (BCP 47's "undetermined").
pub fn language(tag: Option<&str>) -> String {
    let primary = tag.unwrap_or("").trim().split(['-', '_']).next().unwrap_or("").to_ascii_lowercase();
    if (2..=3).contains(&primary.len()) && primary.chars().all(|c| c.is_ascii_lowercase()) {
        primary
    } else {
        "und".to_string()
    }
}

/// Whether a whitespace-separated word is a link.
pub fn is_url(word: &str) -> bool {
    let w = word.trim_matches(|c: char| "()[]<>\"'".contains(c));
    w.starts_with("http://") || w.starts_with("https://") || w.starts_with("www.")
}

/// The words de-duplication compares: lower case, links dropped, punctuation trimmed from the ends.
pub fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .filter(|w| !is_url(w))
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric() && c != '$').to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

/// 64-bit FNV-1a (stable across builds and versions; hashes are stored).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The exact-duplicate hash: FNV-1a of the [`words`] joined by single spaces (so case, spacing, punctuation at word
/// ends and links do not make two copies differ).
pub fn content_hash(words: &[String]) -> u64 {
    fnv1a(words.join(" ").as_bytes())
}

/// The item id: FNV-1a of `source \0 external id`, as 16 hex digits.
pub fn item_id(source: &str, external_id: &str) -> String {
    let mut b = Vec::with_capacity(source.len() + external_id.len() + 1);
    b.extend_from_slice(source.as_bytes());
    b.push(0);
    b.extend_from_slice(external_id.as_bytes());
    format!("{:016x}", fnv1a(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_checks_size_utf8_and_cleans() {
        assert_eq!(text(b"<p>BTC &amp; ETH&#33;</p>\n\n  up", 100).unwrap(), "BTC & ETH! up");
        assert_eq!(text(&[b'a'; 101], 100), Err(Skip::TooLong));
        assert_eq!(text(&[0xff, 0xfe, b'a'], 100), Err(Skip::InvalidUtf8));
        assert_eq!(text(b"<br/> &nbsp; ", 100), Err(Skip::Empty));
        assert_eq!(text(b"a < b and <script>x()</script>c", 100).unwrap(), "a < b and c");
        assert_eq!(decode_entities("AT&T &unknown; &#x24;BTC"), "AT&T &unknown; $BTC");
    }

    #[test]
    fn language_is_the_primary_subtag() {
        assert_eq!(language(Some("en-US")), "en");
        assert_eq!(language(Some("PT_br")), "pt");
        assert_eq!(language(Some("")), "und");
        assert_eq!(language(None), "und");
        assert_eq!(language(Some("english")), "und");
    }

    #[test]
    fn content_hash_ignores_case_spacing_links() {
        let a = content_hash(&words("BTC to the moon! https://x.example/1"));
        let b = content_hash(&words("btc  to the MOON https://y.example/2"));
        assert_eq!(a, b);
        assert_ne!(a, content_hash(&words("ETH to the moon")));
        assert_eq!(item_id("s", "1"), item_id("s", "1"));
        assert_ne!(item_id("s", "1"), item_id("s1", ""));
    }
}
