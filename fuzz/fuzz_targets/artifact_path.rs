//! `ArtifactRoot::path_of` with arbitrary relative paths never panics, and whatever it accepts
//! stays inside the root: lexically (`starts_with`) and after resolving every symlink on the
//! way. The root holds a directory, a file, a link inside, a link leading out and a dangling
//! link leading out.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use regserve::artifact::ArtifactRoot;

struct Fixture {
    _dir: tempfile::TempDir,
    root: ArtifactRoot,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(outside.join("sub")).expect("outside dir");
        let root = ArtifactRoot::new(dir.path().join("root")).expect("artifact root");
        let r = root.root();
        std::fs::create_dir_all(r.join("a/b")).expect("a/b");
        std::fs::write(r.join("a/file"), b"x").expect("a/file");
        std::os::unix::fs::symlink(r.join("a"), r.join("in")).expect("link inside");
        std::os::unix::fs::symlink(&outside, r.join("out")).expect("link out");
        std::os::unix::fs::symlink(outside.join("missing"), r.join("dangling")).expect("dangling link out");
        std::os::unix::fs::symlink(outside.join("sub"), r.join("a/up")).expect("nested link out");
        Fixture { _dir: dir, root }
    })
}

/// Every symlink on the way from the root to `p` must resolve inside the root.
fn links_stay_inside(root: &Path, p: &Path) -> Result<(), String> {
    let rel = p.strip_prefix(root).map_err(|_| format!("{} is not under {}", p.display(), root.display()))?;
    let mut at = PathBuf::from(root);
    for c in rel.components() {
        at.push(c);
        let Ok(meta) = std::fs::symlink_metadata(&at) else { return Ok(()) };
        if meta.file_type().is_symlink() {
            let real =
                at.canonicalize().map_err(|e| format!("{} is a link that does not resolve: {e}", at.display()))?;
            if !real.starts_with(root) {
                return Err(format!("{} leads to {}", at.display(), real.display()));
            }
        }
    }
    Ok(())
}

fuzz_target!(|rel: &str| {
    let f = fixture();
    if let Ok(p) = f.root.path_of(rel) {
        assert!(p.starts_with(f.root.root()), "{rel:?} → {} escapes the root", p.display());
        if let Err(why) = links_stay_inside(f.root.root(), &p) {
            panic!("{rel:?} → {}: {why}", p.display());
        }
    }
});
