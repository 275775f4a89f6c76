//! The standard protobuf JSON mapping of `TokenTransferEvent` (what Go's `protojson`
//! writes): camelCase names, 64-bit integers as strings, RFC 3339 timestamps, bytes as
//! base64, unset messages and oneofs omitted, scalar fields always present.

use std::fmt::Write;

use base64::Engine;
use flowctl_proto::asset::{asset::AssetType, Asset};
use flowctl_proto::token_transfer::{
    muxed_info::Content, token_transfer_event::Event, EventMeta, TokenTransferEvent,
};

/// One event as a compact JSON object.
pub fn to_json(e: &TokenTransferEvent) -> String {
    let mut s = String::with_capacity(512);
    write_json(&mut s, e);
    s
}

/// Appends one event as a compact JSON object.
pub fn write_json(s: &mut String, e: &TokenTransferEvent) {
    s.push('{');
    let mut first = true;
    if let Some(m) = &e.meta {
        key(s, &mut first, "meta");
        meta(s, m);
    }
    if let Some(ev) = &e.event {
        let (name, fields): (&str, [(&str, Option<&str>); 3]) = match ev {
            Event::Transfer(t) => (
                "transfer",
                [
                    ("from", Some(&t.from)),
                    ("to", Some(&t.to)),
                    ("amount", Some(&t.amount)),
                ],
            ),
            Event::Mint(t) => (
                "mint",
                [("to", Some(&t.to)), ("amount", Some(&t.amount)), ("", None)],
            ),
            Event::Burn(t) => (
                "burn",
                [
                    ("from", Some(&t.from)),
                    ("amount", Some(&t.amount)),
                    ("", None),
                ],
            ),
            Event::Clawback(t) => (
                "clawback",
                [
                    ("from", Some(&t.from)),
                    ("amount", Some(&t.amount)),
                    ("", None),
                ],
            ),
            Event::Fee(t) => (
                "fee",
                [
                    ("from", Some(&t.from)),
                    ("amount", Some(&t.amount)),
                    ("", None),
                ],
            ),
        };
        let asset = match ev {
            Event::Transfer(t) => t.asset.as_ref(),
            Event::Mint(t) => t.asset.as_ref(),
            Event::Burn(t) => t.asset.as_ref(),
            Event::Clawback(t) => t.asset.as_ref(),
            Event::Fee(t) => t.asset.as_ref(),
        };
        key(s, &mut first, name);
        s.push('{');
        let mut f = true;
        for (k, v) in fields {
            let Some(v) = v else { continue };
            if k == "amount" {
                if let Some(a) = asset {
                    key(s, &mut f, "asset");
                    asset_json(s, a);
                }
            }
            key(s, &mut f, k);
            string(s, v);
        }
        s.push('}');
    }
    s.push('}');
}

fn meta(s: &mut String, m: &EventMeta) {
    s.push('{');
    let mut f = true;
    key(s, &mut f, "ledgerSequence");
    integer(s, m.ledger_sequence);
    if let Some(ts) = &m.closed_at {
        key(s, &mut f, "closedAt");
        s.push('"');
        write_timestamp(s, ts);
        s.push('"');
    }
    key(s, &mut f, "txHash");
    string(s, &m.tx_hash);
    key(s, &mut f, "transactionIndex");
    integer(s, m.transaction_index);
    if let Some(i) = m.operation_index {
        key(s, &mut f, "operationIndex");
        integer(s, i);
    }
    key(s, &mut f, "contractAddress");
    string(s, &m.contract_address);
    if let Some(mi) = &m.to_muxed_info {
        key(s, &mut f, "toMuxedInfo");
        s.push('{');
        match &mi.content {
            Some(Content::Text(t)) => {
                s.push_str("\"text\":");
                string(s, t);
            }
            Some(Content::Id(id)) => {
                let _ = write!(s, "\"id\":\"{id}\"");
            }
            Some(Content::Hash(h)) => {
                s.push_str("\"hash\":");
                string(s, &base64::engine::general_purpose::STANDARD.encode(h));
            }
            None => {}
        }
        s.push('}');
    }
    s.push('}');
}

fn asset_json(s: &mut String, a: &Asset) {
    match &a.asset_type {
        Some(AssetType::Native(b)) => {
            let _ = write!(s, "{{\"native\":{b}}}");
        }
        Some(AssetType::IssuedAsset(i)) => {
            s.push_str("{\"issuedAsset\":{\"assetCode\":");
            string(s, &i.asset_code);
            s.push_str(",\"issuer\":");
            string(s, &i.issuer);
            s.push_str("}}");
        }
        None => s.push_str("{}"),
    }
}

fn key(s: &mut String, first: &mut bool, k: &str) {
    if !*first {
        s.push(',');
    }
    *first = false;
    s.push('"');
    s.push_str(k);
    s.push_str("\":");
}

fn integer(s: &mut String, n: impl itoa::Integer) {
    s.push_str(itoa::Buffer::new().format(n));
}

/// A JSON string. A sink writes millions of addresses, hashes and amounts, none of which
/// needs an escape: they are recognised by one pass over their bytes (written without an
/// early exit, so it vectorises) and copied whole; otherwise runs between escapes are.
fn string(s: &mut String, v: &str) {
    let plain = v
        .bytes()
        .fold(true, |ok, b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'));
    if plain {
        s.reserve(v.len() + 2);
        s.push('"');
        s.push_str(v);
        s.push('"');
        return;
    }
    s.push('"');
    let mut copied = 0;
    for (i, b) in v.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, so never inside a multi-byte character.
        s.push_str(&v[copied..i]);
        if escape.is_empty() {
            let _ = write!(s, "\\u{b:04x}");
        } else {
            s.push_str(escape);
        }
        copied = i + 1;
    }
    s.push_str(&v[copied..]);
    s.push('"');
}

/// RFC 3339 in UTC with fractional seconds only when present, as protojson writes it.
pub fn timestamp(ts: &prost_types::Timestamp) -> String {
    let mut out = String::with_capacity(30);
    write_timestamp(&mut out, ts);
    out
}

/// Appends [`timestamp`]'s text; every event carries one, so no intermediate string is made.
fn write_timestamp(out: &mut String, ts: &prost_types::Timestamp) {
    let secs = ts.seconds;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    if (0..=9999).contains(&y) {
        digits(out, y as u32, 4);
    } else {
        let _ = write!(out, "{y:04}");
    }
    out.push('-');
    digits(out, mo, 2);
    out.push('-');
    digits(out, d, 2);
    out.push('T');
    digits(out, (rem / 3600) as u32, 2);
    out.push(':');
    digits(out, ((rem / 60) % 60) as u32, 2);
    out.push(':');
    digits(out, (rem % 60) as u32, 2);
    if ts.nanos != 0 {
        // protojson uses 3, 6 or 9 digits.
        let n = ts.nanos.unsigned_abs();
        out.push('.');
        if n.is_multiple_of(1_000_000) {
            digits(out, n / 1_000_000, 3);
        } else if n.is_multiple_of(1_000) {
            digits(out, n / 1_000, 6);
        } else {
            digits(out, n, 9);
        }
    }
    out.push('Z');
}

/// `n` in decimal, zero-padded to `width` digits (`n` must fit).
fn digits(out: &mut String, n: u32, width: u32) {
    let mut div = 10u32.pow(width - 1);
    while div > 0 {
        out.push(char::from(b'0' + (n / div % 10) as u8));
        div /= 10;
    }
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::{string, timestamp};

    #[test]
    fn timestamps_are_rfc3339_utc_with_3_6_or_9_fraction_digits() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00Z"),
            (1_700_000_000, 0, "2023-11-14T22:13:20Z"),
            (951_782_400, 0, "2000-02-29T00:00:00Z"),
            (1_700_000_000, 5_000_000, "2023-11-14T22:13:20.005Z"),
            (1_700_000_000, 120_000, "2023-11-14T22:13:20.000120Z"),
            (1_700_000_000, 7, "2023-11-14T22:13:20.000000007Z"),
            (253_402_300_799, 0, "9999-12-31T23:59:59Z"),
        ];
        for (seconds, nanos, want) in cases {
            let ts = prost_types::Timestamp { seconds, nanos };
            assert_eq!(timestamp(&ts), want, "{seconds}.{nanos}");
        }
    }

    #[test]
    fn strings_escape_quotes_backslashes_and_control_characters_and_keep_unicode() {
        let cases = [
            ("", "\"\""),
            ("GABC", "\"GABC\""),
            ("a\"b\\c", r#""a\"b\\c""#),
            ("line\nnext\r\ttab", r#""line\nnext\r\ttab""#),
            ("\u{1}x\u{1f}", r#""\u0001x\u001f""#),
            ("memo ✓ é\"", "\"memo ✓ é\\\"\""),
        ];
        for (input, want) in cases {
            let mut out = String::new();
            string(&mut out, input);
            assert_eq!(out, want, "{input:?}");
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, input);
        }
    }
}
