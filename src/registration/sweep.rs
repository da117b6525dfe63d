//! Leftovers of interrupted uploads and registrations, swept when `regserve server` starts and
//! when the CLI opens the store ([`sweep_leftovers`]):
//! - `<artifacts>/.staging/<id>`: an import ([`ArtifactRoot::import`]) that never reached its
//!   rename (the process died while copying);
//! - hidden upload temporaries `.<name>.upload-<uuid>` anywhere under the artifact root: an
//!   artifact-proxy upload that never reached its rename;
//! - `<artifacts>/registry/<id>`: a copy made by `regserve models register` whose version row
//!   was never written (the process died during the test load).
//!
//! Only entries older than [`LEFTOVER_AGE`] go: a younger one may belong to a registration or
//! upload still running in another process. Symbolic links are never followed.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::artifact::{ArtifactRoot, REGISTERED_PREFIX, SCHEME, UPLOAD_MARK};
use crate::registry::Store;

/// How old a leftover must be before it is removed: far longer than any copy, upload or test
/// load takes (`--load-timeout` is minutes at most), so nothing still running loses its files.
pub const LEFTOVER_AGE: Duration = Duration::from_secs(60 * 60);

/// What [`sweep_leftovers`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub staging: usize,
    pub uploads: usize,
    pub copies: usize,
}

impl Swept {
    pub fn total(&self) -> usize {
        self.staging + self.uploads + self.copies
    }
}

/// Remove leftovers older than `min_age` (see the module doc) and log one line counting them
/// when there were any. Failures to read or remove are logged and skipped. Blocking.
pub fn sweep_leftovers(store: &Store, artifacts: &ArtifactRoot, min_age: Duration) -> Swept {
    let now = SystemTime::now();
    let old = |path: &Path| {
        std::fs::symlink_metadata(path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age >= min_age))
    };
    let root = artifacts.root();
    let mut swept = Swept::default();
    for entry in children(&root.join(".staging")) {
        if old(&entry) && remove(&entry) {
            swept.staging += 1;
        }
    }
    for entry in children(&root.join(REGISTERED_PREFIX)) {
        let Some(id) = entry.file_name().and_then(|n| n.to_str()) else { continue };
        let location = format!("{SCHEME}/{REGISTERED_PREFIX}/{id}");
        // No version stores its files there (an unreadable store keeps everything).
        if old(&entry) && store.versions_stored_at(&location).is_ok_and(|n| n == 0) && remove(&entry) {
            swept.copies += 1;
        }
    }
    sweep_uploads(root, &old, &mut swept.uploads);
    if swept.total() > 0 {
        tracing::info!(
            staging = swept.staging,
            uploads = swept.uploads,
            copies = swept.copies,
            older_than = ?min_age,
            "removed {} leftovers of interrupted uploads and registrations",
            swept.total()
        );
    }
    swept
}

fn children(dir: &Path) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => vec![],
    }
}

/// Hidden upload temporaries in `dir` and below (not following links).
fn sweep_uploads(dir: &Path, old: &impl Fn(&Path) -> bool, removed: &mut usize) {
    for path in children(dir) {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if meta.is_dir() {
            sweep_uploads(&path, old, removed);
        } else if meta.is_file() && name.starts_with('.') && name.contains(UPLOAD_MARK) && old(&path) && remove(&path) {
            *removed += 1;
        }
    }
}

fn remove(path: &Path) -> bool {
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a leftover");
            false
        }
    }
}
