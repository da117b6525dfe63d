//! The download cache for a remote registry's files: one folder per (registry, model name,
//! version), `<root>/<registry id>/<model>/<version>/` holding `entry.json` and `files/`.
//!
//! A download goes into a hidden sibling, `<model>/.partial-<version>-<pid>-<id>/`, and is
//! renamed into place only once every file is written and synced, with `entry.json` recording
//! what it holds; so a restarted daemon reuses complete downloads and never loads a partial
//! one. Partial folders left by a crash are removed before the next download of that version.
//! Within a process the fetcher serializes downloads of one version; between processes sharing
//! a cache, the first complete folder renamed into place wins and the other is dropped.
//!
//! With a size budget (`serve --cache-max-size`), [`ArtifactCache::trim`] removes the least
//! recently used complete folders past it (use = `entry.json`'s modification time, set when a
//! folder is completed or found by [`ArtifactCache::lookup`]), never those the caller keeps
//! (the versions in service or being loaded).

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::FetchError;

const ENTRY_FILE: &str = "entry.json";
const FILES_DIR: &str = "files";
const PARTIAL_PREFIX: &str = ".partial-";
/// Where `/proc` is missing, a partial folder this old is taken as abandoned.
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io { path: path.display().to_string(), source }
}

/// One downloaded file, as recorded in `entry.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedFile {
    /// Relative to `files/`.
    pub path: String,
    pub size: u64,
}

/// What a complete cache folder holds (`entry.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The download URI the registry gave; a different one means different files.
    pub download_uri: String,
    /// The path to load, relative to `files/` (empty: `files/` itself).
    pub model_path: String,
    pub files: Vec<CachedFile>,
    pub completed_at_ms: i64,
}

impl CacheEntry {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// The cache root, usually `<data-dir>/cache`.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    root: PathBuf,
}

impl ArtifactCache {
    pub fn new(root: impl Into<PathBuf>) -> ArtifactCache {
        ArtifactCache { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of one version: `<root>/<registry id>/<model>/<version>`.
    pub fn entry_dir(&self, registry: &str, name: &str, version: u64) -> PathBuf {
        self.root.join(registry_dir_name(registry)).join(safe_component(name)).join(version.to_string())
    }

    /// The path to load from a complete folder whose files came from `download_uri`; `None`
    /// when the folder is missing, incomplete, damaged, or holds other files.
    pub fn lookup(&self, entry_dir: &Path, download_uri: &str) -> Option<PathBuf> {
        let path = complete_path(entry_dir, download_uri)?;
        mark_used(entry_dir);
        Some(path)
    }

    /// Remove complete version folders, least recently used first, until the cache holds at most
    /// `max_bytes` of files; folders in `keep` are never removed (the cache may then stay over
    /// its budget). Partial downloads are not counted. Returns the folders removed. Blocking.
    pub fn trim(&self, max_bytes: u64, keep: &[PathBuf]) -> Vec<PathBuf> {
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        for registry in subdirs(&self.root) {
            for model in subdirs(&registry) {
                for dir in subdirs(&model) {
                    let used = std::fs::metadata(dir.join(ENTRY_FILE)).and_then(|m| m.modified());
                    let (Ok(used), Some(entry)) = (used, read_entry(&dir)) else { continue };
                    entries.push((used, entry.bytes(), dir));
                }
            }
        }
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        entries.sort_by_key(|e| e.0);
        let mut removed = Vec::new();
        for (_, bytes, dir) in entries {
            if total <= max_bytes {
                break;
            }
            if keep.contains(&dir) {
                continue;
            }
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    total -= bytes;
                    removed.push(dir);
                }
                Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "could not remove a cached version"),
            }
        }
        if !removed.is_empty() {
            tracing::info!(
                removed = removed.len(),
                cached_bytes = total,
                max_bytes,
                "removed least recently used downloads past --cache-max-size"
            );
        }
        removed
    }

    /// Start a download of the version whose folder is `entry_dir`: remove partial folders a
    /// crashed run left for it, and make a fresh one.
    pub fn begin(&self, entry_dir: &Path) -> Result<Partial, FetchError> {
        let parent = entry_dir.parent().ok_or_else(|| FetchError::NotFound(entry_dir.display().to_string()))?;
        let version = entry_dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| FetchError::NotFound(entry_dir.display().to_string()))?;
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        remove_abandoned_partials(parent, version);
        let dir =
            parent.join(format!("{PARTIAL_PREFIX}{version}-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
        let files = dir.join(FILES_DIR);
        std::fs::create_dir_all(&files).map_err(io(&files))?;
        Ok(Partial { dir, final_dir: entry_dir.to_path_buf(), done: false })
    }
}

/// A download in progress. Dropped without [`Partial::commit`], its folder is removed.
#[derive(Debug)]
pub struct Partial {
    dir: PathBuf,
    final_dir: PathBuf,
    done: bool,
}

impl Partial {
    /// Where the downloaded files go.
    pub fn files_dir(&self) -> PathBuf {
        self.dir.join(FILES_DIR)
    }

    /// Record `entry` and rename the folder into place; returns the path to load. If another
    /// process finished the same download first, its folder is kept and this one dropped.
    pub fn commit(mut self, entry: &CacheEntry) -> Result<PathBuf, FetchError> {
        let model = relative_path(&entry.model_path)?;
        let entry_path = self.dir.join(ENTRY_FILE);
        let text = serde_json::to_vec_pretty(entry)
            .map_err(|e| FetchError::Io { path: entry_path.display().to_string(), source: std::io::Error::other(e) })?;
        std::fs::write(&entry_path, text).map_err(io(&entry_path))?;
        sync_path(&entry_path);
        sync_path(&self.files_dir());
        if self.final_dir.exists() {
            if let Some(theirs) = complete_path(&self.final_dir, &entry.download_uri) {
                // Another process completed it meanwhile; use theirs, drop ours.
                return Ok(theirs);
            }
            // Damaged or stale: move it aside first so the rename below cannot fail on it.
            let stale = self.dir.with_extension("stale");
            std::fs::rename(&self.final_dir, &stale).map_err(io(&self.final_dir))?;
            let _ = std::fs::remove_dir_all(&stale);
        }
        std::fs::rename(&self.dir, &self.final_dir).map_err(io(&self.final_dir))?;
        self.done = true;
        sync_path(self.final_dir.parent().unwrap_or(Path::new(".")));
        Ok(self.final_dir.join(FILES_DIR).join(model))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove a partial download");
                }
            }
        }
    }
}

/// The path to load from a complete, intact folder whose files came from `download_uri`.
fn complete_path(entry_dir: &Path, download_uri: &str) -> Option<PathBuf> {
    let entry = read_entry(entry_dir)?;
    if entry.download_uri != download_uri {
        tracing::info!(dir = %entry_dir.display(), cached = %entry.download_uri, now = %download_uri, "cached files came from another download URI; downloading again");
        return None;
    }
    let files = entry_dir.join(FILES_DIR);
    for f in &entry.files {
        let ok = relative_path(&f.path)
            .ok()
            .and_then(|rel| std::fs::symlink_metadata(files.join(rel)).ok())
            .is_some_and(|m| m.is_file() && m.len() == f.size);
        if !ok {
            tracing::warn!(dir = %entry_dir.display(), file = %f.path, "a cached file is missing or has the wrong size; downloading again");
            return None;
        }
    }
    let model = relative_path(&entry.model_path).ok()?;
    Some(files.join(model))
}

fn read_entry(entry_dir: &Path) -> Option<CacheEntry> {
    let text = std::fs::read(entry_dir.join(ENTRY_FILE)).ok()?;
    match serde_json::from_slice(&text) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!(dir = %entry_dir.display(), error = %e, "damaged cache entry; downloading again");
            None
        }
    }
}

/// Remove `<parent>/.partial-<version>-<pid>-*` folders whose process is gone (or is this one:
/// downloads of one version are serialized, so any of ours is left over from a failure).
fn remove_abandoned_partials(parent: &Path, version: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let prefix = format!("{PARTIAL_PREFIX}{version}-");
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let abandoned = match pid {
            Some(pid) if pid == std::process::id() => true,
            Some(pid) if Path::new("/proc/self").exists() => !Path::new("/proc").join(pid.to_string()).exists(),
            _ => entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > ABANDONED_AFTER),
        };
        if abandoned {
            let path = entry.path();
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(dir = %path.display(), "removed a partial download left by an earlier run")
                }
                Err(e) => {
                    tracing::warn!(dir = %path.display(), error = %e, "could not remove a partial download")
                }
            }
        }
    }
}

/// Record that a complete folder was just used (for [`ArtifactCache::trim`]).
fn mark_used(entry_dir: &Path) {
    if let Ok(f) = std::fs::File::options().write(true).open(entry_dir.join(ENTRY_FILE)) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// The folders in `dir`, not hidden (no partial downloads), not links.
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return vec![] };
    rd.flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()) && !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect()
}

fn sync_path(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.sync_all();
    }
}

/// A relative path that stays below the folder it is joined to: no `..`, no root, no drive,
/// no backslashes or NUL; `.` segments are dropped. The empty path is allowed (the folder
/// itself).
pub fn relative_path(rel: &str) -> Result<PathBuf, FetchError> {
    let escapes = || FetchError::PathEscapes(rel.to_string());
    if rel.contains('\0') || rel.contains('\\') || rel.starts_with('/') {
        return Err(escapes());
    }
    let mut out = PathBuf::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            _ => return Err(escapes()),
        }
    }
    Ok(out)
}

/// A name usable as one folder name on any file system: `[A-Za-z0-9._-]` kept, anything else
/// `_`; when that changed the name (or it starts with '.'), a hash of the original is appended
/// so distinct names stay distinct.
pub fn safe_component(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .take(80)
        .collect();
    if out != name || out.starts_with('.') || out.is_empty() {
        out = format!("{}-{:08x}", out.trim_start_matches('.'), fnv1a(name) as u32);
    }
    out
}

/// The folder name of a registry: its host and port, readable, plus a hash of the whole URL.
pub fn registry_dir_name(url: &str) -> String {
    let host = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or_default()
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .replace(':', "_");
    let readable: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .take(64)
        .collect();
    format!("{}-{:016x}", readable.trim_start_matches('.'), fnv1a(url))
}

/// FNV-1a, 64 bits: stable across builds and Rust versions (unlike `DefaultHasher`).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(uri: &str, files: &[(&str, u64)], model_path: &str) -> CacheEntry {
        CacheEntry {
            download_uri: uri.into(),
            model_path: model_path.into(),
            files: files.iter().map(|(p, s)| CachedFile { path: p.to_string(), size: *s }).collect(),
            completed_at_ms: 1,
        }
    }

    #[test]
    fn layout_is_registry_model_version() {
        let cache = ArtifactCache::new("/c");
        let dir = cache.entry_dir("http://127.0.0.1:5000/prefix", "iris-onnx", 3);
        let parts: Vec<String> = dir.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        assert_eq!(parts[..2], ["/", "c"]);
        assert!(parts[2].starts_with("127.0.0.1_5000-"), "{}", parts[2]);
        assert_eq!(parts[3], "iris-onnx");
        assert_eq!(parts[4], "3");
        // Stable, and different registries get different folders.
        assert_eq!(registry_dir_name("http://h:1/a"), registry_dir_name("http://h:1/a"));
        assert_ne!(registry_dir_name("http://h:1/a"), registry_dir_name("http://h:1/b"));
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn names_become_safe_distinct_folder_names() {
        assert_eq!(safe_component("iris-onnx.v_2"), "iris-onnx.v_2");
        let a = safe_component("fraud detector");
        let b = safe_component("fraud_detector");
        assert!(a.starts_with("fraud_detector-") && a != b, "{a} {b}");
        for tricky in ["..", ".", "../x", "a/b", "é", ".hidden", ""] {
            let s = safe_component(tricky);
            assert!(!s.is_empty() && !s.starts_with('.') && !s.contains('/'), "{tricky} → {s}");
        }
        assert!(safe_component(&"x".repeat(500)).len() < 100);
    }

    #[test]
    fn relative_paths_stay_inside() {
        assert_eq!(relative_path("a/b.onnx").unwrap(), PathBuf::from("a/b.onnx"));
        assert_eq!(relative_path("./a//b").unwrap(), PathBuf::from("a/b"));
        assert_eq!(relative_path("").unwrap(), PathBuf::new());
        for bad in ["../x", "a/../../x", "/etc/passwd", "a\\..\\b", "a\0b", "a/.."] {
            assert!(matches!(relative_path(bad), Err(FetchError::PathEscapes(_))), "{bad}");
        }
    }

    #[test]
    fn a_download_is_visible_only_after_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::new(tmp.path());
        let dir = cache.entry_dir("http://r", "m", 1);
        assert_eq!(cache.lookup(&dir, "u"), None);

        let partial = cache.begin(&dir).unwrap();
        std::fs::create_dir_all(partial.files_dir().join("sub")).unwrap();
        std::fs::write(partial.files_dir().join("sub/model.onnx"), b"12345").unwrap();
        assert!(!dir.exists(), "nothing under the final name before commit");
        assert_eq!(cache.lookup(&dir, "u"), None);
        let e = entry("u", &[("sub/model.onnx", 5)], "sub");
        let path = partial.commit(&e).unwrap();
        assert_eq!(path, dir.join("files/sub"));
        assert_eq!(cache.lookup(&dir, "u"), Some(path.clone()));
        // Other files behind the same version (re-created model): not reused.
        assert_eq!(cache.lookup(&dir, "other"), None);
        // No partial folders left behind.
        let leftovers: Vec<_> = std::fs::read_dir(dir.parent().unwrap())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(PARTIAL_PREFIX))
            .collect();
        assert!(leftovers.is_empty());

        // A damaged file makes the entry unusable; a new download replaces the folder.
        std::fs::write(path.join("model.onnx"), b"12").unwrap();
        assert_eq!(cache.lookup(&dir, "u"), None);
        let partial = cache.begin(&dir).unwrap();
        std::fs::write(partial.files_dir().join("model.onnx"), b"abc").unwrap();
        let path = partial.commit(&entry("u", &[("model.onnx", 3)], "model.onnx")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        assert!(!dir.join("files/sub").exists());
    }

    #[test]
    fn dropped_and_abandoned_partials_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::new(tmp.path());
        let dir = cache.entry_dir("http://r", "m", 7);
        let partial = cache.begin(&dir).unwrap();
        let partial_dir = partial.files_dir().parent().unwrap().to_path_buf();
        assert!(partial_dir.exists());
        drop(partial);
        assert!(!partial_dir.exists(), "a failed download leaves nothing");

        // Left by a crashed process (a pid that cannot be alive), and by another version.
        let parent = dir.parent().unwrap();
        let crashed = parent.join(".partial-7-4294967295-abc");
        let other_version = parent.join(".partial-8-4294967295-abc");
        for d in [&crashed, &other_version] {
            std::fs::create_dir_all(d.join("files")).unwrap();
            std::fs::write(d.join("files/model.onnx"), b"half").unwrap();
        }
        // A folder under the final name without entry.json (e.g. copied by hand) is not used.
        std::fs::create_dir_all(dir.join("files")).unwrap();
        std::fs::write(dir.join("files/model.onnx"), b"junk").unwrap();
        assert_eq!(cache.lookup(&dir, "u"), None);

        let partial = cache.begin(&dir).unwrap();
        assert!(!crashed.exists());
        assert!(other_version.exists(), "only this version's partials are touched");
        std::fs::write(partial.files_dir().join("model.onnx"), b"good").unwrap();
        let path = partial.commit(&entry("u", &[("model.onnx", 4)], "model.onnx")).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"good");
    }

    #[test]
    fn over_budget_the_least_recently_used_kept_out_version_goes_first() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::new(tmp.path());
        let download = |version: u64| {
            let dir = cache.entry_dir("http://h:1", "iris", version);
            let partial = cache.begin(&dir).unwrap();
            std::fs::write(partial.files_dir().join("model.onnx"), vec![0u8; 1000]).unwrap();
            let uri = format!("u{version}");
            partial.commit(&entry(&uri, &[("model.onnx", 1000)], "model.onnx")).unwrap();
            let past = SystemTime::now() - Duration::from_secs(100 - version);
            std::fs::File::options().write(true).open(dir.join(ENTRY_FILE)).unwrap().set_modified(past).unwrap();
            dir
        };
        let (v1, v2, v3) = (download(1), download(2), download(3));
        // Within budget: nothing goes.
        assert!(cache.trim(3000, &[]).is_empty());
        // Version 1 is the oldest but in service: version 2, the oldest idle one, goes.
        assert_eq!(cache.trim(2500, std::slice::from_ref(&v1)), std::slice::from_ref(&v2));
        assert!(v1.is_dir() && !v2.exists() && v3.is_dir());
        // A budget smaller than one version: everything idle goes, the kept one never.
        assert_eq!(cache.trim(500, std::slice::from_ref(&v1)), std::slice::from_ref(&v3));
        assert!(v1.is_dir());
        // A lookup counts as a use: of two idle versions, the one just looked up stays.
        let (v4, v5) = (download(4), download(5));
        assert!(cache.lookup(&v4, "u4").is_some());
        assert_eq!(cache.trim(2000, std::slice::from_ref(&v1)), [v5]);
        assert!(v4.is_dir());
    }
}
