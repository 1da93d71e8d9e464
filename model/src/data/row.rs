//! The row codec: a row is the list of its column values in table order,
//! each tagged with its type, so a shard can evaluate filters without knowing
//! the schema.
//!
//! Format: `u16 column count`, then per value a tag byte and its payload
//! (`0` NULL; `1` bool byte; `2` i64 LE; `3` f64 LE; `4` u32 LE length + UTF-8).

use super::Value;

/// Encodes a row.
pub fn encode_row(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + values.len() * 9);
    out.extend_from_slice(&(values.len() as u16).to_le_bytes());
    for v in values {
        match v {
            Value::Null => out.push(0),
            Value::Bool(b) => {
                out.push(1);
                out.push(*b as u8);
            }
            Value::Int(i) => {
                out.push(2);
                out.extend_from_slice(&i.to_le_bytes());
            }
            Value::Double(d) => {
                out.push(3);
                out.extend_from_slice(&d.to_le_bytes());
            }
            Value::Text(s) => {
                out.push(4);
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
    out
}

/// Why a stored row could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("corrupt row encoding: {0}")]
pub struct RowDecodeError(&'static str);

/// Decodes a row written by [`encode_row`].
pub fn decode_row(mut bytes: &[u8]) -> Result<Vec<Value>, RowDecodeError> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], RowDecodeError> {
        if bytes.len() < n {
            return Err(RowDecodeError("truncated"));
        }
        let (head, tail) = bytes.split_at(n);
        *bytes = tail;
        Ok(head)
    }
    let count = u16::from_le_bytes(take(&mut bytes, 2)?.try_into().unwrap()) as usize;
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        let value = match take(&mut bytes, 1)?[0] {
            0 => Value::Null,
            1 => Value::Bool(take(&mut bytes, 1)?[0] != 0),
            2 => Value::Int(i64::from_le_bytes(take(&mut bytes, 8)?.try_into().unwrap())),
            3 => Value::Double(f64::from_le_bytes(take(&mut bytes, 8)?.try_into().unwrap())),
            4 => {
                let len = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().unwrap()) as usize;
                let text = take(&mut bytes, len)?;
                Value::Text(String::from_utf8(text.to_vec()).map_err(|_| RowDecodeError("invalid UTF-8"))?)
            }
            _ => return Err(RowDecodeError("unknown value tag")),
        };
        values.push(value);
    }
    if !bytes.is_empty() {
        return Err(RowDecodeError("trailing bytes"));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip() {
        let row = vec![Value::Int(-5), Value::Null, Value::Text("héllo\0".into()), Value::Bool(true), Value::Double(2.5)];
        assert_eq!(decode_row(&encode_row(&row)).unwrap(), row);
        assert_eq!(decode_row(&encode_row(&[])).unwrap(), vec![]);
    }

    #[test]
    fn corrupt_rows_are_errors_not_panics() {
        let good = encode_row(&[Value::Text("abc".into())]);
        for cut in 0..good.len() {
            assert!(decode_row(&good[..cut]).is_err());
        }
        assert!(decode_row(&[1, 0, 9]).is_err());
    }
}
