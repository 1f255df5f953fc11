//! RFC 8785 (JCS) canonical JSON, restricted to integers.
//!
//! Every record has exactly one byte encoding so that anyone, in any language,
//! can recompute its hash and check its signature. We accept a subset of JCS:
//! numbers must be integers within the I-JSON safe range (|n| <= 2^53 - 1),
//! because JCS serialises numbers as IEEE doubles and larger integers would not
//! round-trip. Amounts that can exceed that range are decimal strings.
//!
//! Decoding is strict: the input must be byte-for-byte the canonical encoding
//! of the value it denotes, which rejects reordered keys, whitespace, floats,
//! duplicate keys and non-canonical string escapes in one comparison.

use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

mod ser;

/// Largest integer magnitude a canonical number may have (2^53 - 1).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Why bytes or a value are not canonical.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CanonicalError {
    /// The bytes are not JSON at all (or not UTF-8).
    #[error("invalid JSON: {0}")]
    Syntax(String),
    /// A number has a fraction or exponent.
    #[error("floating-point number {0} is not allowed (records use integers only)")]
    Float(String),
    /// An integer outside the I-JSON safe range.
    #[error("integer {0} is outside the safe range +/-(2^53-1)")]
    IntegerRange(String),
    /// Valid JSON, but not in canonical form.
    #[error(
        "JSON is not in RFC 8785 canonical form (key order, whitespace, escapes or duplicate keys)"
    )]
    NotCanonical,
    /// The JSON does not have the shape of the expected record.
    #[error("JSON does not match the record: {0}")]
    Shape(String),
}

/// Encodes a JSON value canonically.
pub fn encode_value(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write_value(value, &mut out)?;
    Ok(out)
}

/// Serialises `value` canonically (the same bytes as
/// `encode_value(&serde_json::to_value(value)?)`, without the value tree).
pub fn to_canonical<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, None, &mut out)?;
    Ok(out)
}

/// Appends the canonical encoding of `value` to `out`, leaving out the
/// top-level object member `skip` if given (e.g. the signature, to get the
/// bytes a signature covers).
pub fn write_canonical<T: Serialize + ?Sized>(
    value: &T,
    skip: Option<&'static str>,
    out: &mut Vec<u8>,
) -> Result<(), CanonicalError> {
    value.serialize(ser::Serializer { out, skip })
}

/// Parses bytes that must be the canonical encoding of a JSON value.
pub fn decode_value(bytes: &[u8]) -> Result<Value, CanonicalError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| CanonicalError::Syntax(e.to_string()))?;
    if encode_value(&value)? != bytes {
        return Err(CanonicalError::NotCanonical);
    }
    Ok(value)
}

/// Parses bytes that must be the canonical encoding of a `T`.
///
/// Besides the JSON-level check, the typed value must encode back to the same
/// bytes, so a record has one encoding even where serde would accept several
/// (for example `null` for an absent optional field).
pub fn from_canonical<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T, CanonicalError> {
    let value = decode_value(bytes)?;
    let typed: T =
        serde_json::from_value(value).map_err(|e| CanonicalError::Shape(e.to_string()))?;
    if to_canonical(&typed)? != bytes {
        return Err(CanonicalError::NotCanonical);
    }
    Ok(typed)
}

fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                if u > MAX_SAFE_INTEGER {
                    return Err(CanonicalError::IntegerRange(n.to_string()));
                }
                out.extend_from_slice(u.to_string().as_bytes());
            } else if let Some(i) = n.as_i64() {
                if i.unsigned_abs() > MAX_SAFE_INTEGER {
                    return Err(CanonicalError::IntegerRange(n.to_string()));
                }
                out.extend_from_slice(i.to_string().as_bytes());
            } else {
                return Err(CanonicalError::Float(n.to_string()));
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // JCS orders keys by their UTF-16 code units, which differs from
            // UTF-8 byte order for characters above U+FFFF.
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_value(&map[key], out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// JCS string escaping: `"` and `\` escaped, control characters as the short
/// forms `\b \t \n \f \r` or `\u00xx` (lowercase hex), everything else literal.
fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    // Copy runs that need no escaping in one go; only ASCII bytes are ever
    // escaped, so splitting at them never cuts a UTF-8 sequence.
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_and_strips_whitespace() {
        let v = json!({"b": 1, "a": [true, null, "x"], "c": {"z": -3, "y": "\u{1}"}});
        let bytes = encode_value(&v).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"a":[true,null,"x"],"b":1,"c":{"y":"\u0001","z":-3}}"#
        );
        assert_eq!(decode_value(&bytes).unwrap(), v);
    }

    #[test]
    fn utf16_key_order() {
        // U+1F600 (surrogates D83D..) sorts before U+FB01 in UTF-16, after it in UTF-8.
        let v = json!({"\u{fb01}": 1, "\u{1f600}": 2});
        let s = String::from_utf8(encode_value(&v).unwrap()).unwrap();
        assert!(s.find('\u{1f600}').unwrap() < s.find('\u{fb01}').unwrap());
    }

    #[test]
    fn rejects_non_canonical_inputs() {
        for bad in [
            &br#"{"b":1,"a":2}"#[..],
            br#"{"a": 2}"#,
            br#"{"a":2.5}"#,
            br#"{"a":1e3}"#,
            br#"{"a":1,"a":1}"#,
            br#"{"a":"\u0041"}"#,
            br#"{"a":"\/"}"#,
            br#"{"a":9007199254740992}"#,
            b" {}",
            b"{}\n",
        ] {
            assert!(
                decode_value(bad).is_err(),
                "accepted {}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            decode_value(br#"{"a":2.0}"#),
            Err(CanonicalError::Float(_))
        ));
        assert!(matches!(decode_value(b"{"), Err(CanonicalError::Syntax(_))));
    }

    /// The escaping agrees with serde_json's, which follows JCS for strings.
    #[test]
    fn string_escapes_match_serde_json() {
        let all: String = (0u32..0x80)
            .filter_map(char::from_u32)
            .chain("\u{7f}\u{2028}\u{1f600}é".chars())
            .collect();
        let mut out = Vec::new();
        write_string(&all, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string(&all).unwrap()
        );
    }

    /// The direct encoder against the value-tree reference on every serde
    /// shape (records use only some of them).
    #[test]
    fn direct_encoder_matches_value_tree_on_all_shapes() {
        use serde::Serialize;
        use std::collections::BTreeMap;
        #[derive(Serialize)]
        enum E {
            Unit,
            New(u8),
            Tuple(u8, String),
            Struct { z: u8, a: Vec<u8>, m: String },
        }
        #[derive(Serialize)]
        struct S {
            zeta: Option<u32>,
            alpha: Vec<E>,
            #[serde(skip_serializing_if = "Option::is_none")]
            gone: Option<u8>,
            map: BTreeMap<String, i64>,
            nums: BTreeMap<u32, bool>,
            unit: (),
            tup: (i8, char),
            #[serde(with = "serde_bytes_like")]
            raw: Vec<u8>,
            #[serde(flatten)]
            extra: BTreeMap<String, String>,
        }
        mod serde_bytes_like {
            pub(crate) fn serialize<S: serde::Serializer>(
                v: &[u8],
                s: S,
            ) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(v)
            }
        }
        let x = S {
            zeta: None,
            alpha: vec![
                E::Unit,
                E::New(7),
                E::Tuple(1, "t\u{1}".into()),
                E::Struct {
                    z: 2,
                    a: vec![],
                    m: "\u{1f600}".into(),
                },
            ],
            gone: None,
            map: [("\u{fb01}".to_string(), -5), ("\u{1f600}".to_string(), 9)].into(),
            nums: [(10, true), (9, false)].into(),
            unit: (),
            tup: (-3, 'x'),
            raw: vec![0, 255],
            extra: [("b".to_string(), "1".to_string())].into(),
        };
        let reference = encode_value(&serde_json::to_value(&x).unwrap()).unwrap();
        assert_eq!(to_canonical(&x).unwrap(), reference);
        // Errors agree too.
        assert!(matches!(
            to_canonical(&1.5f64),
            Err(CanonicalError::Float(_))
        ));
        assert!(matches!(
            to_canonical(&(MAX_SAFE_INTEGER + 1)),
            Err(CanonicalError::IntegerRange(_))
        ));
        assert!(matches!(
            to_canonical(&u128::MAX),
            Err(CanonicalError::IntegerRange(_))
        ));
        assert_eq!(
            to_canonical(&-(MAX_SAFE_INTEGER as i64)).unwrap(),
            b"-9007199254740991"
        );
    }

    #[test]
    fn safe_integer_bounds() {
        assert!(encode_value(&json!(MAX_SAFE_INTEGER)).is_ok());
        assert!(encode_value(&json!(-(MAX_SAFE_INTEGER as i64))).is_ok());
        assert!(encode_value(&json!(MAX_SAFE_INTEGER + 1)).is_err());
    }
}
