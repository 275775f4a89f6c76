//! What the registry shows of a pipeline file: the file with its secrets masked. Run records
//! keep the file as given (the supervisor's own), but every read over the wire gets this view,
//! since reads are open to any local user.

/// Shown in place of a secret.
pub const MASK: &str = "<redacted>";

/// Key names whose values are secrets, matched against the key lowercased with `-` as `_`.
const SECRET_KEY_PARTS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "private_key",
    "credential",
    "access_key",
];

/// `text` with the value of every secret-looking key masked (`password: x`, env
/// `PGPASSWORD: x`, `AWS_SECRET_ACCESS_KEY: x`) and the password of every URL
/// (`postgres://user:pw@host`) masked. Line by line, so it works on any YAML, valid or not.
pub fn config_yaml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        out.push_str(&mask_url_passwords(&mask_secret_value(body)));
        out.push_str(end);
    }
    out
}

fn is_secret_key(key: &str) -> bool {
    let key = key
        .trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .to_ascii_lowercase()
        .replace('-', "_");
    SECRET_KEY_PARTS.iter().any(|part| key.contains(part))
}

/// `  KEY: value` (also after `- ` or inside `{…}` flow maps) with KEY secret-looking → masked.
fn mask_secret_value(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    // Each `key:` in the line, as flow maps put several on one line.
    while let Some(colon) = find_key_colon(rest) {
        let (before, after) = rest.split_at(colon);
        let key_start = before
            .rfind(['{', ',', '-', ' ', '\t'])
            .map(|i| i + 1)
            .unwrap_or(0);
        let key = &before[key_start..];
        out.push_str(before);
        out.push(':');
        let after = &after[1..];
        if is_secret_key(key) {
            let value_len = after.find([',', '}']).unwrap_or(after.len());
            let value = &after[..value_len];
            if !value.trim().is_empty() {
                out.push(' ');
                out.push_str(MASK);
                rest = &after[value_len..];
                continue;
            }
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The byte index of the next `:` that ends a key (followed by a space or the line's end).
fn find_key_colon(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    (0..bytes.len()).find(|&i| {
        bytes[i] == b':' && (i + 1 == bytes.len() || matches!(bytes[i + 1], b' ' | b'\t'))
    })
}

/// `scheme://user:password@host` → `scheme://user:<redacted>@host`.
fn mask_url_passwords(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let authority_end = tail
            .find(['/', ' ', '"', '\'', '?', '#'])
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..=colon]);
                out.push_str(MASK);
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}
