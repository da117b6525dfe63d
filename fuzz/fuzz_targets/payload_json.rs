//! JSON scoring bodies: `parse_json` on arbitrary bytes never panics; accepted payloads go
//! through `convert::prepare` against every fixed schema, and what converts must fill its
//! tensors exactly (data length = product of shape, rows > 0). The first line also goes
//! through `format_of` as a Content-Type header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regserve::runtime::payload::{format_of, parse_json};

fuzz_target!(|data: &[u8]| {
    if let Some(line) = data.split(|b| *b == b'\n').next().and_then(|l| std::str::from_utf8(l).ok()) {
        let _ = format_of(Some(line));
    }
    let Ok(request) = parse_json(data) else { return };
    regserve_fuzz::prepare_all(&request.payload);
});
