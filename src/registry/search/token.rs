//! Keyset page tokens: the last row's sort-key values, bound to the target, filter and order by
//! a fingerprint and checked with a checksum, in URL-safe base64.

use std::fmt::Write as _;

use super::*;

impl Query {
    pub(super) fn encode_token(&self, values: &[Value]) -> String {
        let k: Vec<serde_json::Value> = values
            .iter()
            .map(|v| match v {
                Value::Integer(i) => serde_json::Value::from(*i),
                Value::Text(s) => serde_json::Value::from(s.as_str()),
                _ => serde_json::Value::Null,
            })
            .collect();
        let payload = serde_json::json!({
            "v": TOKEN_VERSION,
            "f": format!("{:016x}", self.fingerprint),
            "k": k,
        })
        .to_string()
        .into_bytes();
        let mut bytes = payload.clone();
        bytes.extend_from_slice(&token_checksum(&payload).to_be_bytes());
        b64url_encode(&bytes)
    }

    pub(super) fn decode_token(&self, token: &str) -> Result<Vec<Value>, FilterError> {
        let bad = |msg: &str| FilterError::PageToken(msg.to_owned());
        if token.len() > MAX_TOKEN_LEN {
            return Err(bad("token is too long"));
        }
        let bytes = b64url_decode(token).ok_or_else(|| bad("token is not validly encoded"))?;
        if bytes.len() < 8 {
            return Err(bad("token is truncated"));
        }
        let (payload, sum) = bytes.split_at(bytes.len() - 8);
        if token_checksum(payload).to_be_bytes()[..] != *sum {
            return Err(bad("token is corrupted or was modified"));
        }
        let json: serde_json::Value = serde_json::from_slice(payload).map_err(|_| bad("token payload is malformed"))?;
        if json.get("v").and_then(serde_json::Value::as_u64) != Some(TOKEN_VERSION) {
            return Err(bad("unsupported token version"));
        }
        let expected = format!("{:016x}", self.fingerprint);
        if json.get("f").and_then(serde_json::Value::as_str) != Some(expected.as_str()) {
            return Err(bad("token was issued for a different filter_string or order_by; \
                 restart the search without a page_token"));
        }
        let k = json
            .get("k")
            .and_then(serde_json::Value::as_array)
            .filter(|k| k.len() == self.keys.len())
            .ok_or_else(|| bad("token has the wrong number of sort keys"))?;
        self.keys
            .iter()
            .zip(k)
            .map(|(key, v)| match key.kind {
                KeyKind::Int => v.as_i64().map(Value::Integer),
                KeyKind::Text => v.as_str().map(|s| Value::Text(s.to_owned())),
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("token has a sort key of the wrong type"))
    }
}

pub(super) fn fnv1a64(seed: u64, data: &[u8]) -> u64 {
    data.iter().fold(seed, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

pub(super) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Stable hash of everything that determines the result set and its order.
pub(super) fn fingerprint(target: Target, filter_sql: &str, params: &[Value], order_sql: &str) -> u64 {
    let mut canon = format!(
        "v{TOKEN_VERSION}|{}|{}:{filter_sql}|{}:{order_sql}|",
        target.code(),
        filter_sql.len(),
        order_sql.len()
    );
    for p in params {
        match p {
            Value::Integer(i) => {
                let _ = write!(canon, "i{i};");
            }
            Value::Text(s) => {
                let _ = write!(canon, "s{}:{s};", s.len());
            }
            other => {
                let _ = write!(canon, "o{other:?};");
            }
        }
    }
    fnv1a64(FNV_OFFSET, canon.as_bytes())
}

/// Integrity check appended to the token payload (detects corruption and
/// casual edits; tokens are not secret and carry no authority).
pub(super) fn token_checksum(payload: &[u8]) -> u64 {
    fnv1a64(fnv1a64(FNV_OFFSET, b"regserve/page-token"), payload)
}

pub(super) const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub(super) fn b64url_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let mut buf = [0u8; 4];
        buf[1..=chunk.len()].copy_from_slice(chunk);
        let n = u32::from_be_bytes(buf);
        for i in 0..=chunk.len() {
            let idx = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(B64URL[idx as usize]));
        }
    }
    out
}

pub(super) fn b64url_value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Strict unpadded base64url decoding (rejects non-canonical trailing bits).
pub(super) fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3 + 2);
    for chunk in bytes.chunks(4) {
        let mut n: u32 = 0;
        for (i, &c) in chunk.iter().enumerate() {
            n |= b64url_value(c)? << (18 - 6 * i);
        }
        let produced = chunk.len() - 1;
        if n & ((1u32 << (24 - 8 * produced)) - 1) != 0 {
            return None;
        }
        out.extend_from_slice(&n.to_be_bytes()[1..=produced]);
    }
    Some(out)
}
