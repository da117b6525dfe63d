//! `ModelUri: FromStr` on arbitrary strings: never panics, and every accepted URI prints
//! (`Display`) to a string that parses back to the same value — and prints the same again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regserve::uri::ModelUri;

fuzz_target!(|s: &str| {
    let Ok(uri) = s.parse::<ModelUri>() else { return };
    let printed = uri.to_string();
    let again: ModelUri = printed.parse().unwrap_or_else(|e| panic!("{s:?} → {printed:?} does not re-parse: {e}"));
    assert_eq!(again, uri, "{s:?} → {printed:?}");
    assert_eq!(again.to_string(), printed, "printing is not stable for {s:?}");
});
