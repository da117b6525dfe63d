//! Crash safety of `regserve server` (issue #6): `kill -9` in the middle of a burst of writes,
//! restart, and check that what clients were told still holds.
//!
//! One registry (a temporary `--data-dir`) lives through every cycle. A cycle:
//!
//! 1. the server is up (first start or restart): wait until no version is
//!    `PENDING_REGISTRATION` (the server re-tests pending versions at start), then check the
//!    invariants below;
//! 2. a burst: three REST writers loop create logged model → upload its files through
//!    `PUT /api/2.0/mlflow-artifacts/artifacts/...` (model.onnx padded to 2–3 MiB, so kills
//!    land mid-upload) → finalize → `model-versions/create` with `models:/m-<id>`, and now and
//!    then delete a version; beside them `regserve models register` keeps two registrations
//!    running on the same data directory (copying files into the artifact root);
//! 3. after a random delay (in half the cycles aimed a few ms after a `model-versions/create`
//!    goes out, so it lands in the test load) the server gets SIGKILL, and each running CLI
//!    registration too with probability 1/2; the others finish against the database with the
//!    server down;
//! 4. restart; in about a third of the cycles, kill it again within 150 ms (while it re-tests
//!    the versions left pending) and restart once more.
//!
//! Invariants, checked through the REST API and on disk after every restart:
//!
//! - every version acknowledged to a client (a 200 answer, a CLI's JSON output) and never sent a
//!   delete still exists;
//! - a number handed out after a restart is greater than every number that existed or was
//!   acknowledged before it, and no number is ever acknowledged twice;
//! - no version stays `PENDING_REGISTRATION` after a restart; every version ends `READY`;
//! - every `READY` version's download URI lists exactly its source's files, each byte-equal to
//!   what was uploaded or registered (`MLmodel` parses with an `onnx` flavor);
//! - every file under a final name in the artifact tree is complete (byte-equal to one of the
//!   sources); temporary names exist only as hidden upload temporaries (`.<name>.upload-<id>`,
//!   never listed) or inside `.staging/`.
//!
//! `CRASH_CYCLES` (default 8) sets the number of cycles, `CRASH_SEED` the seed (printed; it
//! fixes every random choice, not the machine's timing).
//!
//! The same test runs with the registry's database on PostgreSQL (issue 14): a throwaway
//! cluster (`tests/common/pg.rs`), a fresh database given to the server and to every CLI
//! registration as `REGSERVE_BACKEND_STORE_URI`, the artifacts still in the data directory.
//! `CRASH_CYCLES_PG` (default 4) sets its number of cycles.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::pg::PgCluster;
use common::{repo, Registry, Server};
use reqwest::{Client, Method};
use serde_json::{json, Value};

const API: &str = "/api/2.0/mlflow";
const ARTIFACTS: &str = "/api/2.0/mlflow-artifacts/artifacts";
const MODELS: [&str; 2] = ["crash-a", "crash-b"];
const REST_WRITERS: usize = 3;
const CLI_AT_ONCE: usize = 2;
/// The kill lands this long after the burst starts (uniform, in ms).
const KILL_AFTER_MS: (u64, u64) = (150, 1800);

// -------------------------------------------------------------------- seeded randomness

/// splitmix64: small, seeded, good enough to pick kill points and paths.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64) / ((1u64 << 53) as f64) < p
    }
    fn between(&mut self, (lo, hi): (u64, u64)) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

// -------------------------------------------------------------------- the models written

/// One model directory the writers upload or register: an example model with its model.onnx
/// padded to a few MiB (a long `doc_string` appended to the protobuf: still a valid model).
struct Variant {
    /// Also the description of every version made from it, so a version names its files.
    label: &'static str,
    dir: PathBuf,
    files: BTreeMap<String, Bytes>,
}

fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn padded_onnx(original: &[u8], pad: usize, rng: &mut Rng) -> Vec<u8> {
    let mut out = original.to_vec();
    out.push((6 << 3) | 2); // ModelProto.doc_string, length-delimited
    varint(pad, &mut out);
    out.extend((0..pad).map(|_| b'a' + rng.below(26) as u8));
    out
}

fn make_variants(dir: &Path) -> Vec<Variant> {
    let mut rng = Rng(0x5eed);
    [("variant-a", "iris-v1", 2 << 20), ("variant-b", "iris-v2", 3 << 20)]
        .into_iter()
        .map(|(label, example, pad)| {
            let out = dir.join(label);
            std::fs::create_dir_all(&out).unwrap();
            let mut files = BTreeMap::new();
            for entry in std::fs::read_dir(repo().join("models").join(example)).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_str().unwrap().to_string();
                let mut bytes = std::fs::read(&path).unwrap();
                if name == "model.onnx" {
                    bytes = padded_onnx(&bytes, pad, &mut rng);
                }
                std::fs::write(out.join(&name), &bytes).unwrap();
                files.insert(name, Bytes::from(bytes));
            }
            Variant { label, dir: out, files }
        })
        .collect()
}

fn variant_of<'a>(variants: &'a [Variant], label: &str) -> Option<&'a Variant> {
    variants.iter().find(|v| v.label == label)
}

// -------------------------------------------------------------------- what clients were told

#[derive(Default)]
struct Ledger {
    /// Acknowledged (a 200 answer, a CLI's JSON) and never sent a delete: these must exist.
    live: BTreeMap<(String, u64), &'static str>,
    /// Every number ever acknowledged, per model: one acknowledged twice was repeated.
    acked: BTreeMap<String, BTreeSet<u64>>,
    /// Numbers handed out from now on must be greater (the highest known at the last restart).
    floor: BTreeMap<String, u64>,
    /// Artifact folders of versions sent a delete: a kill may leave them partly removed.
    deleted_folders: BTreeSet<String>,
    problems: Vec<String>,
    cycle: CycleStats,
}

#[derive(Default, Debug)]
struct CycleStats {
    rest_versions: usize,
    cli_versions: usize,
    deletes: usize,
    uploads: usize,
    cli_killed: usize,
}

impl Ledger {
    fn ack(&mut self, how: &str, name: &str, version: u64, label: &'static str) {
        let floor = self.floor.get(name).copied().unwrap_or(0);
        if version <= floor {
            self.problems.push(format!(
                "{how}: {name} v{version} acknowledged after a restart, but v{floor} already existed before it"
            ));
        }
        if !self.acked.entry(name.to_string()).or_default().insert(version) {
            self.problems.push(format!("{how}: {name} v{version} acknowledged twice (a repeated number)"));
        }
        self.live.insert((name.to_string(), version), label);
    }
}

/// A burst's shared switches. Dropping it (the test ending, even by a panic) stops the burst
/// and has the CLI runner kill what it still runs.
struct Switches {
    /// `model-versions/create` requests sent, so a kill can be aimed at a test load.
    creates_sent: AtomicU64,
    stop: AtomicBool,
    kill_clis: AtomicBool,
    abort: AtomicBool,
}

struct AbortOnDrop(Arc<Switches>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
        self.0.abort.store(true, Ordering::SeqCst);
    }
}

// -------------------------------------------------------------------- REST writers

struct Writer {
    client: Client,
    base: String,
    ledger: Arc<Mutex<Ledger>>,
    variants: Arc<Vec<Variant>>,
    switches: Arc<Switches>,
}

/// Why a round ended early: the server went away (expected: it is being killed), or it
/// answered with an error (recorded as a problem).
struct Interrupted;

impl Writer {
    async fn call(&self, method: Method, path: &str, body: Value) -> Result<Value, Interrupted> {
        let mut req = self.client.request(method.clone(), format!("{}{path}", self.base));
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|_| Interrupted)?;
        let status = resp.status();
        let text = resp.text().await.map_err(|_| Interrupted)?;
        if !status.is_success() {
            self.problem(format!("{method} {path} answered {status}: {text}"));
            return Err(Interrupted);
        }
        Ok(if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
    }

    async fn upload(&self, rel: &str, bytes: Bytes) -> Result<(), Interrupted> {
        let resp = self
            .client
            .put(format!("{}{ARTIFACTS}/{rel}", self.base))
            .body(bytes)
            .send()
            .await
            .map_err(|_| Interrupted)?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            self.problem(format!("PUT {rel} answered {status}: {text}"));
            return Err(Interrupted);
        }
        self.ledger.lock().unwrap().cycle.uploads += 1;
        Ok(())
    }

    fn problem(&self, p: String) {
        // An answer while the burst is being torn down is still an answer: record it.
        self.ledger.lock().unwrap().problems.push(p);
    }

    /// Log one model as the MLflow client does, register it, and now and then delete a version.
    async fn round(&self, rng: &mut Rng) -> Result<(), Interrupted> {
        let variant = &self.variants[rng.below(self.variants.len() as u64) as usize];
        let lm = self
            .call(Method::POST, &format!("{API}/logged-models"), json!({"experiment_id": "0", "name": "crash"}))
            .await?;
        let id = lm["model"]["info"]["model_id"].as_str().unwrap_or_default().to_string();
        let mut names: Vec<&String> = variant.files.keys().collect();
        for i in (1..names.len()).rev() {
            names.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for name in names {
            self.upload(&format!("0/models/{id}/artifacts/{name}"), variant.files[name].clone()).await?;
        }
        self.call(Method::PATCH, &format!("{API}/logged-models/{id}"), json!({"status": "LOGGED_MODEL_READY"})).await?;
        let model = MODELS[rng.below(MODELS.len() as u64) as usize];
        self.switches.creates_sent.fetch_add(1, Ordering::SeqCst);
        let created = self
            .call(
                Method::POST,
                &format!("{API}/model-versions/create"),
                json!({"name": model, "source": format!("models:/{id}"), "model_id": id, "description": variant.label}),
            )
            .await?;
        let mv = &created["model_version"];
        let version: u64 = mv["version"].as_str().and_then(|v| v.parse().ok()).unwrap_or(0);
        if mv["status"] == "FAILED_REGISTRATION" {
            self.problem(format!("{model} v{version} from complete files failed its test load: {mv}"));
        }
        {
            let mut ledger = self.ledger.lock().unwrap();
            ledger.ack("model-versions/create", model, version, variant.label);
            ledger.cycle.rest_versions += 1;
        }
        if rng.chance(0.2) {
            // Delete an acknowledged version (a CLI copy's files go with it). Marked first: once
            // the request is out, the version may or may not exist after a kill.
            let victim = {
                let mut ledger = self.ledger.lock().unwrap();
                let n = ledger.live.len() as u64;
                let key = (n > 0).then(|| ledger.live.keys().nth(rng.below(n) as usize).cloned()).flatten();
                if let Some(k) = &key {
                    ledger.live.remove(k);
                    ledger.cycle.deletes += 1;
                }
                key
            };
            if let Some((name, version)) = victim {
                let uri = self
                    .call(
                        Method::GET,
                        &format!("{API}/model-versions/get-download-uri?name={name}&version={version}"),
                        Value::Null,
                    )
                    .await?;
                let folder = uri["artifact_uri"].as_str().unwrap_or_default().trim_start_matches("mlflow-artifacts:/");
                self.ledger.lock().unwrap().deleted_folders.insert(folder.trim_matches('/').to_string());
                self.call(
                    Method::DELETE,
                    &format!("{API}/model-versions/delete"),
                    json!({"name": name, "version": version.to_string()}),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn run(self, seed: u64) {
        let mut rng = Rng(seed);
        while !self.switches.stop.load(Ordering::SeqCst) {
            if self.round(&mut rng).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

// -------------------------------------------------------------------- CLI registrations

struct CliRun {
    child: Child,
    model: &'static str,
    label: &'static str,
    killed: bool,
}

/// Keep `CLI_AT_ONCE` `regserve models register` processes running until `stop`; kill each with
/// probability 1/2 when asked. One thread owns every child, so a kill never hits a reaped pid.
fn cli_runner(
    data_dir: PathBuf,
    database: Option<String>,
    variants: Arc<Vec<Variant>>,
    ledger: Arc<Mutex<Ledger>>,
    sw: Arc<Switches>,
    seed: u64,
) {
    let mut rng = Rng(seed);
    let mut running: Vec<CliRun> = Vec::new();
    let mut stopped_at: Option<Instant> = None;
    loop {
        running.retain_mut(|run| match run.child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                let mut out = String::new();
                let mut err = String::new();
                let _ = run.child.stdout.take().map(|mut s| s.read_to_string(&mut out));
                let _ = run.child.stderr.take().map(|mut s| s.read_to_string(&mut err));
                let mut ledger = ledger.lock().unwrap();
                if status.success() {
                    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
                    match v["version"].as_str().and_then(|s| s.parse::<u64>().ok()) {
                        Some(version) => {
                            ledger.ack("models register", run.model, version, run.label);
                            ledger.cycle.cli_versions += 1;
                        }
                        None => ledger.problems.push(format!("models register printed no version: {out}")),
                    }
                } else if !(run.killed && status.signal() == Some(9)) {
                    ledger.problems.push(format!("models register failed ({status}): {err}"));
                }
                false
            }
            Err(e) => {
                ledger.lock().unwrap().problems.push(format!("waiting for models register: {e}"));
                false
            }
        });
        if sw.kill_clis.swap(false, Ordering::SeqCst) {
            for run in &mut running {
                if rng.chance(0.5) && run.child.kill().is_ok() {
                    run.killed = true;
                    ledger.lock().unwrap().cycle.cli_killed += 1;
                }
            }
        }
        let overdue = stopped_at.is_some_and(|t| t.elapsed() > Duration::from_secs(60));
        if sw.abort.load(Ordering::SeqCst) || overdue {
            if overdue {
                ledger.lock().unwrap().problems.push("a models register ran for over a minute".into());
            }
            for run in &mut running {
                let _ = run.child.kill();
                let _ = run.child.wait();
            }
            return;
        }
        if sw.stop.load(Ordering::SeqCst) {
            stopped_at.get_or_insert_with(Instant::now);
            if running.is_empty() {
                return;
            }
        } else if running.len() < CLI_AT_ONCE {
            let variant = &variants[rng.below(variants.len() as u64) as usize];
            let model = MODELS[rng.below(MODELS.len() as u64) as usize];
            let mut cmd = Command::new(common::bin());
            if let Some(db) = &database {
                cmd.env("REGSERVE_BACKEND_STORE_URI", db);
            }
            let child = cmd
                .arg("--data-dir")
                .arg(&data_dir)
                .args(["models", "register"])
                .arg(&variant.dir)
                .args(["--name", model, "--description", variant.label, "--json"])
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn regserve models register");
            running.push(CliRun { child, model, label: variant.label, killed: false });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// -------------------------------------------------------------------- checks

/// What the checks remember between cycles, so each file and version is read in full once.
#[derive(Default)]
struct Verified {
    /// (name, version) → its artifact folder, relative to the root, once downloaded and compared.
    versions: HashMap<(String, u64), String>,
    /// Files compared with a source, by (inode, size, mtime): a rewrite changes one of them.
    files: HashMap<PathBuf, (u64, u64, i64, i64)>,
}

#[derive(Default, Debug)]
struct CheckStats {
    versions: usize,
    downloaded: usize,
    upload_temps: usize,
    staging_leftovers: usize,
    orphan_copies: usize,
    orphan_partly_removed: usize,
}

async fn all_versions(c: &Client, s: &Server) -> Vec<Value> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut q = vec![("max_results", "10000".to_string())];
        if let Some(t) = &token {
            q.push(("page_token", t.clone()));
        }
        let page: Value = c
            .get(s.url(&format!("{API}/model-versions/search")))
            .query(&q)
            .send()
            .await
            .expect("model-versions/search")
            .json()
            .await
            .expect("model-versions/search JSON");
        out.extend(page["model_versions"].as_array().cloned().unwrap_or_default());
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return out,
        }
    }
}

fn version_key(v: &Value) -> (String, u64) {
    (
        v["name"].as_str().unwrap_or_default().to_string(),
        v["version"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0),
    )
}

/// Download a version's files through its download URI and compare them with its source.
async fn check_download(c: &Client, s: &Server, name: &str, version: u64, variant: &Variant) -> Result<String, String> {
    let uri: Value = c
        .get(s.url(&format!("{API}/model-versions/get-download-uri")))
        .query(&[("name", name), ("version", &version.to_string())])
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let uri = uri["artifact_uri"].as_str().unwrap_or_default();
    let rel =
        uri.strip_prefix("mlflow-artifacts:/").ok_or(format!("download URI {uri}"))?.trim_matches('/').to_string();
    let listing: Value = c
        .get(s.url(ARTIFACTS))
        .query(&[("path", &rel)])
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let listed: BTreeMap<String, u64> = listing["files"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|f| (f["path"].as_str().unwrap_or_default().to_string(), f["file_size"].as_u64().unwrap_or(u64::MAX)))
        .collect();
    let want: BTreeMap<String, u64> = variant.files.iter().map(|(n, b)| (n.clone(), b.len() as u64)).collect();
    if listed != want {
        return Err(format!("{uri} lists {listed:?}, uploaded {want:?}"));
    }
    for (file, bytes) in &variant.files {
        let got = c
            .get(s.url(&format!("{ARTIFACTS}/{rel}/{file}")))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .bytes()
            .await
            .map_err(|e| e.to_string())?;
        if got != *bytes {
            return Err(format!(
                "{uri}/{file}: {} bytes downloaded differ from the {} uploaded",
                got.len(),
                bytes.len()
            ));
        }
    }
    let mlmodel: serde_yaml::Value =
        serde_yaml::from_slice(&variant.files["MLmodel"]).map_err(|e| format!("{uri}/MLmodel: {e}"))?;
    if mlmodel["flavors"]["onnx"]["data"].as_str() != Some("model.onnx") {
        return Err(format!("{uri}/MLmodel has no onnx flavor"));
    }
    Ok(rel)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let ty = entry.file_type().unwrap();
        if ty.is_dir() {
            walk(&entry.path(), out);
        } else {
            out.push(entry.path());
        }
    }
}

fn is_upload_temp(name: &str) -> bool {
    // `.<name>.upload-<32 hex digits>`, as artifacts_api names them.
    name.starts_with('.')
        && name
            .rsplit_once(".upload-")
            .is_some_and(|(_, id)| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The artifact tree on disk: every file under a final name is complete; temporaries only where
/// they belong; every version's folder holds exactly its source's files.
fn check_tree(
    root: &Path,
    variants: &[Variant],
    referenced: &BTreeMap<String, &'static str>,
    deleted_folders: &BTreeSet<String>,
    verified: &mut Verified,
    problems: &mut Vec<String>,
    stats: &mut CheckStats,
) {
    let mut files = Vec::new();
    walk(root, &mut files);
    let mut folders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in files {
        let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if rel.starts_with(".staging/") {
            stats.staging_leftovers += 1;
            continue;
        }
        if is_upload_temp(&name) {
            stats.upload_temps += 1;
            continue;
        }
        if rel.split('/').any(|c| c.starts_with('.')) || !meta.is_file() {
            problems.push(format!("unexpected entry in the artifact tree: {rel}"));
            continue;
        }
        let folder = rel.rsplit_once('/').map(|(f, _)| f.to_string()).unwrap_or_default();
        folders.entry(folder).or_default().insert(name.clone());
        let stamp = (meta.ino(), meta.len(), meta.mtime(), meta.mtime_nsec());
        if verified.files.get(&path) == Some(&stamp) {
            continue;
        }
        let complete = variants.iter().any(|v| {
            v.files
                .get(&name)
                .is_some_and(|b| b.len() as u64 == meta.len() && std::fs::read(&path).is_ok_and(|got| got == *b))
        });
        if complete {
            verified.files.insert(path, stamp);
        } else {
            problems.push(format!("{rel}: {} bytes under its final name match no source (a partial file)", meta.len()));
        }
    }
    for (folder, label) in referenced {
        let want: BTreeSet<String> =
            variant_of(variants, label).map(|v| v.files.keys().cloned().collect()).unwrap_or_default();
        let have = folders.get(folder).cloned().unwrap_or_default();
        if have != want {
            problems.push(format!("version folder {folder} holds {have:?}, its source {want:?}"));
        }
    }
    // Copies no version points at: a CLI killed between its copy and its insert (complete), or a
    // server killed while removing a deleted version's copy (part of it gone).
    for (folder, names) in &folders {
        if folder.starts_with("registry/") && !referenced.contains_key(folder) {
            if variants.iter().any(|v| v.files.keys().eq(names.iter())) {
                stats.orphan_copies += 1;
            } else if deleted_folders.contains(folder) {
                stats.orphan_partly_removed += 1;
            } else {
                problems.push(format!("{folder} holds part of a copy ({names:?}) and no version was deleted there"));
            }
        }
    }
}

/// After a (re)start: wait for pending versions to settle, then check every invariant.
async fn check(
    c: &Client,
    s: &Server,
    reg: &Registry,
    variants: &[Variant],
    ledger: &Mutex<Ledger>,
    verified: &mut Verified,
) -> CheckStats {
    let mut stats = CheckStats::default();
    let started = Instant::now();
    let versions = loop {
        let versions = all_versions(c, s).await;
        let pending: Vec<_> =
            versions.iter().filter(|v| v["status"] == "PENDING_REGISTRATION").map(version_key).collect();
        if pending.is_empty() {
            break versions;
        }
        if started.elapsed() > Duration::from_secs(30) {
            ledger
                .lock()
                .unwrap()
                .problems
                .push(format!("still PENDING_REGISTRATION 30 s after the restart: {pending:?}"));
            break versions;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stats.versions = versions.len();
    let mut problems = Vec::new();
    let mut referenced: BTreeMap<String, &'static str> = BTreeMap::new();
    let mut highest: BTreeMap<String, u64> = BTreeMap::new();
    for v in &versions {
        let (name, version) = version_key(v);
        let h = highest.entry(name.clone()).or_default();
        *h = (*h).max(version);
        let desc = v["description"].as_str().unwrap_or_default();
        let Some(variant) = variant_of(variants, desc) else {
            problems.push(format!("{name} v{version}: unknown description {desc:?}"));
            continue;
        };
        if let Some(label) = ledger.lock().unwrap().live.get(&(name.clone(), version)) {
            if *label != variant.label {
                problems.push(format!("{name} v{version} was acknowledged as {label}, now describes {desc}"));
            }
        }
        if v["status"] != "READY" {
            if v["status"] != "PENDING_REGISTRATION" {
                problems.push(format!("{name} v{version} is {} ({})", v["status"], v["status_message"]));
            }
            continue;
        }
        let rel = match verified.versions.get(&(name.clone(), version)) {
            Some(rel) => rel.clone(),
            None => match check_download(c, s, &name, version, variant).await {
                Ok(rel) => {
                    stats.downloaded += 1;
                    verified.versions.insert((name.clone(), version), rel.clone());
                    rel
                }
                Err(e) => {
                    problems.push(format!("{name} v{version} (READY): {e}"));
                    continue;
                }
            },
        };
        referenced.insert(rel, variant.label);
    }
    let present: BTreeSet<(String, u64)> = versions.iter().map(version_key).collect();
    verified.versions.retain(|k, _| present.contains(k));
    let mut ledger = ledger.lock().unwrap();
    let root = reg.data_dir().join("artifacts");
    check_tree(&root, variants, &referenced, &ledger.deleted_folders, verified, &mut problems, &mut stats);
    for key in ledger.live.keys() {
        if !present.contains(key) {
            problems.push(format!("{} v{} was acknowledged and is gone after the restart", key.0, key.1));
        }
    }
    for (name, acked) in ledger.acked.clone() {
        let h = highest.entry(name).or_default();
        *h = (*h).max(acked.last().copied().unwrap_or(0));
    }
    // Gap-free: a number is taken inside the transaction that creates its version, so a killed
    // create takes none. Every number up to the highest is a version that exists, or one that
    // was acknowledged (and may since have been deleted: only acknowledged versions are).
    for (name, &h) in &highest {
        let acked = ledger.acked.get(name);
        let holes: Vec<u64> = (1..=h)
            .filter(|v| !present.contains(&(name.clone(), *v)) && !acked.is_some_and(|a| a.contains(v)))
            .collect();
        if !holes.is_empty() {
            problems.push(format!("{name}: numbers {holes:?} below v{h} were never a version (a gap)"));
        }
    }
    ledger.floor = highest;
    ledger.problems.extend(problems);
    stats
}

/// Versions the kill left PENDING_REGISTRATION, read straight from the database (server down).
fn pending_in_db(reg: &Registry, database: Option<&str>) -> i64 {
    const PENDING: &str = "SELECT COUNT(*) FROM model_versions WHERE status = 'PENDING_REGISTRATION'";
    if let Some(url) = database {
        let out = common::pg::psql(url, PENDING).unwrap_or_else(|e| panic!("count pending versions: {e}"));
        return out.trim().parse().unwrap_or_else(|_| panic!("psql counted {out:?}"));
    }
    let db = rusqlite::Connection::open(reg.data_dir().join("registry.db")).expect("open registry.db");
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.query_row(PENDING, [], |r| r.get(0)).expect("count pending versions")
}

/// How many pending versions a server said it re-tests at start (logged before it listens).
fn resumed_at_start(server: &Server) -> u64 {
    server
        .log()
        .lines()
        .find(|l| l.contains("left pending"))
        .and_then(|l| l.split("pending=").nth(1))
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

// -------------------------------------------------------------------- the test

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn seed() -> u64 {
    env_u64("CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 & 0xffff_ffff
    })
}

/// The registry under test: a data directory, its database there (SQLite) or on PostgreSQL.
struct Target {
    reg: Registry,
    database: Option<String>,
}

impl Target {
    fn spawn_server(&self) -> Server {
        let mut c = self.reg.cmd();
        if let Some(db) = &self.database {
            c.env("REGSERVE_BACKEND_STORE_URI", db);
        }
        c.args(["server", "--host", "127.0.0.1", "--port", "0"]).env("RUST_LOG", "info");
        Server::start(c)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_of_writes_loses_nothing_acknowledged() {
    let cycles = env_u64("CRASH_CYCLES").unwrap_or(8).max(1);
    let seed = seed();
    println!("crash_safety: seed {seed} (CRASH_SEED={seed} repeats its choices), {cycles} cycles (CRASH_CYCLES)");
    let target = Target { reg: Registry::new(), database: None };
    let budget = Duration::from_secs(60 + 40 * cycles);
    match tokio::time::timeout(budget, run_cycles(&target, cycles, seed)).await {
        Ok(()) => {}
        Err(_) => panic!("crash_safety (seed {seed}) did not finish within {budget:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_of_writes_loses_nothing_acknowledged_on_postgres() {
    let cycles = env_u64("CRASH_CYCLES_PG").unwrap_or(4).max(1);
    let seed = seed();
    println!(
        "crash_safety (PostgreSQL): seed {seed} (CRASH_SEED={seed} repeats its choices), {cycles} cycles (CRASH_CYCLES_PG)"
    );
    let pg = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    let target = Target { reg: Registry::new(), database: Some(pg.new_database("crash_safety")) };
    let budget = Duration::from_secs(60 + 40 * cycles);
    match tokio::time::timeout(budget, run_cycles(&target, cycles, seed)).await {
        Ok(()) => {}
        Err(_) => panic!("crash_safety on PostgreSQL (seed {seed}) did not finish within {budget:?}"),
    }
}

async fn run_cycles(target: &Target, cycles: u64, seed: u64) {
    let reg = &target.reg;
    let sources = tempfile::tempdir().unwrap();
    let variants = Arc::new(make_variants(sources.path()));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut verified = Verified::default();
    let mut rng = Rng(seed);
    let started = Instant::now();

    let mut server = target.spawn_server();
    let c = Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    for name in MODELS {
        let r =
            c.post(server.url(&format!("{API}/registered-models/create"))).json(&json!({"name": name})).send().await;
        assert_eq!(r.unwrap().status(), 200);
    }
    let mut resumed_total = 0;
    for cycle in 1..=cycles + 1 {
        let stats = check(&c, &server, reg, &variants, &ledger, &mut verified).await;
        {
            let ledger = ledger.lock().unwrap();
            assert!(
                ledger.problems.is_empty(),
                "seed {seed}, after restart {}: {} problem(s):\n{}\nserver log:\n{}",
                cycle - 1,
                ledger.problems.len(),
                ledger.problems.join("\n"),
                server.log()
            );
            println!("  checked: {stats:?}");
        }
        if cycle > cycles {
            break;
        }

        // The burst.
        let switches = Arc::new(Switches {
            creates_sent: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            kill_clis: AtomicBool::new(false),
            abort: AtomicBool::new(false),
        });
        let _abort = AbortOnDrop(switches.clone());
        ledger.lock().unwrap().cycle = CycleStats::default();
        let client = Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let writers: Vec<_> = (0..REST_WRITERS)
            .map(|_| {
                let w = Writer {
                    client: client.clone(),
                    base: server.base.clone(),
                    ledger: ledger.clone(),
                    variants: variants.clone(),
                    switches: switches.clone(),
                };
                tokio::spawn(w.run(rng.next()))
            })
            .collect();
        let cli = {
            let (dir, variants, ledger, sw, s) =
                (reg.data_dir().to_path_buf(), variants.clone(), ledger.clone(), switches.clone(), rng.next());
            let database = target.database.clone();
            std::thread::spawn(move || cli_runner(dir, database, variants, ledger, sw, s))
        };
        let kill_after = rng.between(KILL_AFTER_MS);
        tokio::time::sleep(Duration::from_millis(kill_after)).await;
        let mut aimed = String::new();
        if rng.chance(0.5) {
            // Aim at a test load: kill a few ms after the next `model-versions/create` goes out.
            let sent = switches.creates_sent.load(Ordering::SeqCst);
            let waiting = Instant::now();
            while switches.creates_sent.load(Ordering::SeqCst) == sent && waiting.elapsed() < Duration::from_secs(3) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let after = rng.below(20);
            tokio::time::sleep(Duration::from_millis(after)).await;
            aimed = format!(" (+{after} ms after a create)");
        }

        // kill -9: `Child::kill` is SIGKILL; dropping the handle kills and reaps the server.
        drop(server);
        switches.kill_clis.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
        switches.stop.store(true, Ordering::SeqCst);
        for w in writers {
            tokio::time::timeout(Duration::from_secs(40), w).await.expect("a REST writer stopped").unwrap();
        }
        tokio::task::spawn_blocking(move || cli.join()).await.unwrap().expect("the CLI runner");
        let pending = pending_in_db(reg, target.database.as_deref());
        let burst = std::mem::take(&mut ledger.lock().unwrap().cycle);

        server = target.spawn_server();
        let mut resumed = resumed_at_start(&server);
        let mut again = String::new();
        if rng.chance(0.3) {
            // A second crash while the restarted server re-tests what the first left pending.
            let after = rng.below(150);
            tokio::time::sleep(Duration::from_millis(after)).await;
            drop(server);
            server = target.spawn_server();
            resumed += resumed_at_start(&server);
            again = format!(", killed again {after} ms after the restart");
        }
        resumed_total += resumed;
        println!(
            "cycle {cycle}: killed after {kill_after} ms{aimed}; {} uploads, {} versions over REST, {} by the CLI, {} deletes, {} CLI registrations killed; {pending} left pending, {resumed} re-tested at start{again}",
            burst.uploads, burst.rest_versions, burst.cli_versions, burst.deletes, burst.cli_killed
        );
    }
    let ledger = ledger.lock().unwrap();
    println!(
        "crash_safety: {cycles} cycles in {:.1} s, {} versions acknowledged, {resumed_total} pending versions re-tested after restarts (seed {seed})",
        started.elapsed().as_secs_f64(),
        ledger.acked.values().map(BTreeSet::len).sum::<usize>()
    );
}
