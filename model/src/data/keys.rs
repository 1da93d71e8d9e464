//! Order-preserving key encoding.
//!
//! A row's key is `table id (u32, big-endian)` followed by the encoded primary
//! key, so that byte order equals SQL order and a primary-key range of one
//! table is one contiguous RocksDB range:
//!
//! | type | encoding |
//! |---|---|
//! | integer | tag `0x02`, then the i64 with its sign bit flipped, big-endian |
//! | double | tag `0x03`, then the IEEE bits, all flipped if negative, else sign bit flipped |
//! | text | tag `0x04`, bytes with `0x00` escaped as `0x00 0xFF`, ended by `0x00 0x01` |
//! | boolean | tag `0x01`, then `0x00` or `0x01` |
//!
//! Every encoding is prefix-free, so `encode(v) ++ [0x00]` is the smallest key
//! greater than `encode(v)` for any other primary key of the same table.

use super::Value;

const TAG_BOOL: u8 = 0x01;
const TAG_INT: u8 = 0x02;
const TAG_DOUBLE: u8 = 0x03;
const TAG_TEXT: u8 = 0x04;

/// Appends the order-preserving encoding of a (non-null) key value.
pub fn encode_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => panic!("primary key values are never NULL"),
        Value::Bool(b) => {
            out.push(TAG_BOOL);
            out.push(*b as u8);
        }
        Value::Int(i) => {
            out.push(TAG_INT);
            out.extend_from_slice(&((*i as u64) ^ (1 << 63)).to_be_bytes());
        }
        Value::Double(d) => {
            out.push(TAG_DOUBLE);
            let bits = d.to_bits();
            let ordered = if bits >> 63 == 1 { !bits } else { bits ^ (1 << 63) };
            out.extend_from_slice(&ordered.to_be_bytes());
        }
        Value::Text(s) => {
            out.push(TAG_TEXT);
            for &b in s.as_bytes() {
                out.push(b);
                if b == 0 {
                    out.push(0xFF);
                }
            }
            out.extend_from_slice(&[0x00, 0x01]);
        }
    }
}

/// The first key of a table's keyspace.
pub fn table_prefix(table_id: u32) -> Vec<u8> {
    table_id.to_be_bytes().to_vec()
}

/// The first key after a table's keyspace (exclusive end of a full scan).
pub fn table_end(table_id: u32) -> Vec<u8> {
    match table_id.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => vec![0xFF; 5],
    }
}

/// The key of the row with primary key `pk` in table `table_id`.
pub fn row_key(table_id: u32, pk: &Value) -> Vec<u8> {
    let mut key = table_prefix(table_id);
    encode_value(&mut key, pk);
    key
}

/// The smallest key strictly greater than `key` among row keys.
pub fn successor(mut key: Vec<u8>) -> Vec<u8> {
    key.push(0x00);
    key
}

/// Decodes the primary key of a row key (for diagnostics and tests).
pub fn decode_row_key(key: &[u8]) -> Option<(u32, Value)> {
    if key.len() < 5 {
        return None;
    }
    let table = u32::from_be_bytes(key[0..4].try_into().ok()?);
    let body = &key[5..];
    let value = match key[4] {
        TAG_BOOL => Value::Bool(*body.first()? == 1),
        TAG_INT => Value::Int((u64::from_be_bytes(body.get(..8)?.try_into().ok()?) ^ (1 << 63)) as i64),
        TAG_DOUBLE => {
            let ordered = u64::from_be_bytes(body.get(..8)?.try_into().ok()?);
            let bits = if ordered >> 63 == 1 { ordered ^ (1 << 63) } else { !ordered };
            Value::Double(f64::from_bits(bits))
        }
        TAG_TEXT => {
            let mut out = Vec::new();
            let mut i = 0;
            while i < body.len() {
                match (body[i], body.get(i + 1)) {
                    (0, Some(0xFF)) => out.push(0),
                    (0, Some(0x01)) => break,
                    (0, _) => return None,
                    (b, _) => {
                        out.push(b);
                        i += 1;
                        continue;
                    }
                }
                i += 2;
            }
            Value::Text(String::from_utf8(out).ok()?)
        }
        _ => return None,
    };
    Some((table, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &Value) -> Vec<u8> {
        row_key(7, v)
    }

    fn assert_order_preserved(mut values: Vec<Value>) {
        values.sort_by(|a, b| a.sort_cmp(b));
        for pair in values.windows(2) {
            let (a, b) = (enc(&pair[0]), enc(&pair[1]));
            assert!(a <= b, "{:?} encodes after {:?}", pair[0], pair[1]);
            assert_eq!(a == b, pair[0] == pair[1]);
            assert!(successor(a.clone()) <= b || a == b);
        }
        for v in &values {
            assert_eq!(decode_row_key(&enc(v)), Some((7, v.clone())));
        }
    }

    #[test]
    fn integers_keep_their_order() {
        let mut values = vec![i64::MIN, i64::MIN + 1, -1_000_000, -256, -255, -1, 0, 1, 255, 256, 65_536, i64::MAX - 1, i64::MAX];
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..1000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            values.push(seed as i64);
        }
        assert_order_preserved(values.into_iter().map(Value::Int).collect());
    }

    #[test]
    fn doubles_keep_their_order() {
        let values = [f64::NEG_INFINITY, -1e300, -2.5, -1.0, -f64::MIN_POSITIVE, -0.0, 0.0, f64::MIN_POSITIVE, 0.5, 1.0, 1e300, f64::INFINITY];
        let mut sorted: Vec<Vec<u8>> = values.iter().map(|d| enc(&Value::Double(*d))).collect();
        let original = sorted.clone();
        sorted.sort();
        assert_eq!(sorted, original);
        for d in values {
            assert_eq!(decode_row_key(&enc(&Value::Double(d))), Some((7, Value::Double(d))));
        }
    }

    #[test]
    fn text_keeps_its_order_including_embedded_zero_bytes() {
        let values = ["", "\0", "\0\0", "\0a", "a", "a\0", "a\0b", "aa", "ab", "b", "\u{7f}", "é", "日本"];
        assert_order_preserved(values.iter().map(|s| Value::Text(s.to_string())).collect());
    }

    #[test]
    fn booleans_keep_their_order() {
        assert_order_preserved(vec![Value::Bool(false), Value::Bool(true)]);
    }

    #[test]
    fn tables_do_not_interleave() {
        let last_of_1 = row_key(1, &Value::Text("\u{10FFFF}".repeat(10)));
        let first_of_2 = row_key(2, &Value::Int(i64::MIN));
        assert!(last_of_1 < table_end(1));
        assert!(table_end(1) <= first_of_2);
        assert!(table_prefix(2) <= first_of_2);
    }
}
