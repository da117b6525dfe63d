//! CSV scoring bodies: `parse_csv` on arbitrary bytes never panics; every accepted frame is
//! rectangular and goes through `convert::prepare` against every fixed schema, whose results
//! must fill their tensors exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regserve::runtime::payload::{parse_csv, Payload};

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = parse_csv(data) else { return };
    let width = frame.columns.as_ref().map(Vec::len).expect("CSV always has a header");
    assert!(!frame.rows.is_empty());
    assert!(frame.rows.iter().all(|r| r.len() == width), "ragged CSV frame accepted: {frame:?}");
    regserve_fuzz::prepare_all(&Payload::Frame(frame));
});
