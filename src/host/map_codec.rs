//! The proxy-wasm ABI's header-map wire format, decoded without trusting it:
//! a little-endian u32 count, then a (key length, value length) u32 pair per
//! entry, then each key and value followed by a NUL byte.

/// Decodes a header map. Names must be UTF-8 (Envoy only passes RFC 9110
/// tokens); values stay bytes, since HTTP allows obs-text (RFC 9110 5.5).
/// `None` when the buffer is malformed.
pub fn decode(bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let read_u32 = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = read_u32(0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    if data > bytes.len() {
        return None;
    }
    let mut map = Vec::with_capacity(count);
    for n in 0..count {
        let key_len = read_u32(4 + n * 8)?;
        let value_len = read_u32(8 + n * 8)?;
        let key = bytes.get(data..data.checked_add(key_len)?)?;
        data = data.checked_add(key_len)?.checked_add(1)?;
        let value = bytes.get(data..data.checked_add(value_len)?)?;
        data = data.checked_add(value_len)?.checked_add(1)?;
        map.push((String::from_utf8(key.to_vec()).ok()?, value.to_vec()));
    }
    Some(map)
}

/// Encodes a header map for the host.
pub fn encode(map: &[(&str, &str)]) -> Vec<u8> {
    let size = 4 + map
        .iter()
        .map(|(k, v)| 8 + k.len() + v.len() + 2)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (k, v) in map {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in map {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let map = [
            (":method", "POST"),
            ("x-empty", ""),
            ("authorization", "Bearer abc"),
        ];
        let decoded = decode(&encode(&map)).unwrap();
        assert_eq!(decoded.len(), 3);
        assert_eq!(
            decoded[2],
            ("authorization".to_string(), b"Bearer abc".to_vec())
        );
        assert_eq!(decoded[1].1, b"");
    }

    #[test]
    fn obs_text_values_survive() {
        let mut bytes = encode(&[("x", "ab")]);
        let at = bytes.len() - 3;
        bytes[at] = 0xff;
        assert_eq!(decode(&bytes).unwrap()[0].1, vec![0xff, b'b']);
    }

    #[test]
    fn malformed_input_is_refused_not_panicked_on() {
        let good = encode(&[("a", "b"), ("c", "d")]);
        for cut in 0..good.len() - 1 {
            // Every truncation is either refused or decodes without panicking.
            let _ = decode(&good[..cut.max(1)]);
        }
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(
            decode(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
            None
        );
        assert_eq!(decode(&[1, 0, 0]), None);
    }
}
