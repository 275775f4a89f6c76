//! Text from the wire made safe for a terminal: ids and names come from any local client.

/// `s` with control characters (ESC, CR, BEL, C1 …) written as Rust escapes, so a name
/// cannot move the cursor, clear the screen or fake a row.
pub fn escape(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `s` padded with spaces to `width` characters; any width, no formatter limit.
pub fn pad(s: &str, width: usize) -> String {
    let len = s.chars().count();
    let mut out = String::with_capacity(s.len() + width.saturating_sub(len));
    out.push_str(s);
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(len)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_writes_control_characters_as_escapes_and_keeps_the_rest() {
        assert_eq!(escape("a\x1b[2Jb\n"), "a\\u{1b}[2Jb\\n");
        assert_eq!(escape("ledger-ü"), "ledger-ü");
    }

    #[test]
    fn pad_accepts_widths_beyond_the_formatters_limit() {
        assert_eq!(pad("ab", 4), "ab  ");
        assert_eq!(pad(&"x".repeat(70_000), 70_001).len(), 70_001);
    }
}
