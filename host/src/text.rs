//! Bounding and neutralising text that came from a plugin or a client before the host
//! keeps it, answers with it or logs it; and reading a query string.

/// The `key=value` pairs of a URL's query string, values percent-decoded (`+` is a space);
/// a key without `=` has an empty value. An error names a value that is not UTF-8.
pub fn query_pairs(query: &str) -> Result<Vec<(&str, String)>, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(&value.replace('+', " "))
                .decode_utf8()
                .map_err(|_| format!("query parameter {key} is not UTF-8"))?
                .into_owned();
            Ok((key, value))
        })
        .collect()
}

/// `text` cut to at most `max` bytes on a character boundary, with a marker saying how
/// long it was when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (cut from {} bytes)", &text[..end], text.len())
}

/// `text` as one line of at most `max` bytes: escaped as [`write_escaped`] does, and a
/// longer text cut after a whole character or escape, ending with `…`.
pub fn one_line(text: &str, max: usize) -> String {
    const CUT: &str = "…";
    let mut out = String::with_capacity(text.len().min(max));
    // The length up to which the text may stay when it has to be cut.
    let mut fits = 0;
    for c in text.chars() {
        push_escaped(&mut out, c);
        if out.len() > max {
            out.truncate(fits);
            if out.len() + CUT.len() <= max {
                out.push_str(CUT);
            }
            return out;
        }
        if out.len() + CUT.len() <= max {
            fits = out.len();
        }
    }
    out
}

/// Writes `text` with every control character (and the Unicode line and paragraph
/// separators) as a visible escape, so that it stays on one line and cannot fake the
/// start of another record: `\n`, `\r`, `\t`, else `\u{…}`.
pub fn write_escaped(out: &mut impl std::fmt::Write, text: &str) -> std::fmt::Result {
    let mut rest = text;
    while let Some(at) = rest.find(needs_escape) {
        out.write_str(&rest[..at])?;
        let c = rest[at..].chars().next().unwrap_or_default();
        for e in c.escape_default() {
            out.write_char(e)?;
        }
        rest = &rest[at + c.len_utf8()..];
    }
    out.write_str(rest)
}

fn push_escaped(out: &mut String, c: char) {
    if needs_escape(c) {
        out.extend(c.escape_default());
    } else {
        out.push(c);
    }
}

/// [`write_escaped`] into a new string.
pub fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Writing into a String cannot fail.
    let _ = write_escaped(&mut out, text);
    out
}

fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// Lowercase hex of `bytes` (the one written beside the idempotency key, which the guest
/// SDK shares).
pub use crate::contract::idempotency::hex;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutting_keeps_whole_characters_and_says_so() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("ééé", 3), "é… (cut from 6 bytes)");
    }

    #[test]
    fn one_line_escapes_and_cuts_within_its_bound() {
        assert_eq!(one_line("a\nb", 100), "a\\nb");
        let long = one_line(&"x\n".repeat(1000), 64);
        assert!(long.len() <= 64 && long.ends_with('…'), "{long}");
        assert!(!long.contains('\n'));
    }

    #[test]
    fn control_characters_become_visible_escapes() {
        assert_eq!(
            escaped("ok\nFORGED 2026 INFO x\r\t\u{1b}[31m\u{2028}"),
            "ok\\nFORGED 2026 INFO x\\r\\t\\u{1b}[31m\\u{2028}"
        );
        assert_eq!(escaped("plain text, é"), "plain text, é");
    }
}
