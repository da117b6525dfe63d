//! `serve --cache-max-size`: downloads from a remote registry (the real `regserve server`)
//! stay within the budget by removing the least recently used versions not in service; the
//! version in service is never removed, even when it alone is over the budget.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Registry;

/// The cache folder of version `version` of `name`: `<cache>/<registry id>/<name>/<version>`.
fn cached(cache: &Path, name: &str, version: u64) -> Option<PathBuf> {
    let registries = std::fs::read_dir(cache).ok()?;
    registries.flatten().map(|r| r.path().join(name).join(version.to_string())).find(|p| p.join("entry.json").is_file())
}

#[tokio::test]
async fn over_budget_the_idle_version_is_evicted_and_the_served_one_never() {
    let registry = Registry::new();
    registry.register("iris-v1", "iris", &["--stage", "production"]);
    registry.register("iris-v2", "iris", &[]);
    let server = registry.spawn(&["server"]);
    server.wait_ready("/health", Duration::from_secs(30)).await;

    let serving = Registry::new();
    let cache = serving.data_dir().join("cache");
    let serve = serving.spawn(&[
        "serve",
        "-m",
        "models:/iris/Production",
        "--registry-uri",
        &server.base,
        "--poll-interval",
        "200ms",
        "--cache-max-size",
        "1",
    ]);
    serve.wait_ready("/health", Duration::from_secs(60)).await;
    // Version 1 alone is over the 1-byte budget, but it is in service: it stays.
    assert!(cached(&cache, "iris", 1).is_some(), "{}", serve.log());

    registry.ok(&["models", "transition", "iris", "2", "Production", "--archive-existing"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while serve.health_json().await["models"][0]["version"] != 2 {
        assert!(Instant::now() < deadline, "version 2 never came into service:\n{}", serve.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Version 2 is in service: version 1, now idle and least recently used, is removed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cached(&cache, "iris", 1).is_some() {
        assert!(Instant::now() < deadline, "version 1 stayed in the cache:\n{}", serve.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cached(&cache, "iris", 2).is_some(), "the version in service was removed:\n{}", serve.log());
    assert!(serve.log().contains("--cache-max-size"), "{}", serve.log());
}
