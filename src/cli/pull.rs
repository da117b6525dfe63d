//! `regserve pull URI DIR`: put the version a `models:/` URI selects into a directory, with a
//! [`PullRecord`] naming where it came from — KServe's storage initializer for `models:/`
//! storage URIs (a `ClusterStorageContainer` runs it as `pull <storageUri> /mnt/models`), and
//! what `serve --model-dir` reads.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::config::{GlobalArgs, PullArgs};
use crate::manager::local::PULL_RECORD;
use crate::manager::PullRecord;

/// Where a remote registry's files are downloaded before they are moved into place: inside the
/// directory (same file system: moving is a rename), and skipped by `serve --model-dir`.
const STAGING: &str = ".regserve-pull";

pub fn pull(global: &GlobalArgs, args: PullArgs) -> Result<()> {
    let dir = args.dir.as_path();
    prepare(dir)?;
    let staging = dir.join(STAGING);
    let result = pull_into(global, &args, &staging);
    // Whatever happened, the staging area goes (a failed download leaves nothing behind).
    if let Err(e) = std::fs::remove_dir_all(&staging) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %staging.display(), error = %e, "could not remove the download's staging folder");
        }
    }
    let record = result?;
    let v = &record.model_version;
    writeln!(
        std::io::stdout(),
        "Pulled version {} of '{}' ({}) from {} into {}",
        v.version,
        v.name,
        record.uri,
        record.registry,
        dir.display()
    )?;
    Ok(())
}

fn pull_into(global: &GlobalArgs, args: &PullArgs, staging: &Path) -> Result<PullRecord> {
    let dir = args.dir.as_path();
    let client = super::open_client(global)?;
    let (version, files, movable) = client
        .fetch_to(&args.uri, staging)
        .with_context(|| format!("getting {} from {}", args.uri, client.describe()))?;
    let place = |from: &Path, to: &Path| -> Result<()> {
        if movable {
            std::fs::rename(from, to).with_context(|| format!("moving {} to {}", from.display(), to.display()))
        } else {
            copy_tree(from, to)
        }
    };
    if files.is_dir() {
        for entry in std::fs::read_dir(&files).with_context(|| format!("reading {}", files.display()))? {
            let entry = entry?;
            place(&entry.path(), &dir.join(entry.file_name()))?;
        }
    } else {
        let name = files.file_name().context("the version's file has no name")?;
        place(&files, &dir.join(name))?;
    }
    let record = PullRecord {
        uri: args.uri.to_string(),
        registry: public_registry(&client.describe()),
        pulled_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default(),
        location: version.download_location().to_string(),
        model_version: version,
    };
    // Written last, through a rename: a directory with a record holds the whole version.
    let tmp = dir.join(format!(".{PULL_RECORD}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&record)?).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(PULL_RECORD))
        .with_context(|| format!("writing {}", dir.join(PULL_RECORD).display()))?;
    Ok(record)
}

/// The registry as anyone may read it in the record: no credentials, no query.
fn public_registry(described: &str) -> String {
    match url::Url::parse(described) {
        Ok(mut url) if url.has_host() => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.as_str().trim_end_matches('/').to_string()
        }
        _ => crate::uri::redact_url(described),
    }
}

/// Make `dir` ready: created if missing; empty, or an earlier pull's (its files are removed).
/// Anything else is refused rather than mixed with the new files.
fn prepare(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    if entries.is_empty() {
        return Ok(());
    }
    if !dir.join(PULL_RECORD).is_file() {
        let first = entries[0].file_name();
        bail!(
            "{} is not empty (it holds {} among {} entries) and no earlier `regserve pull` wrote it; pull into an empty or new directory",
            dir.display(),
            first.to_string_lossy(),
            entries.len()
        );
    }
    // The record first: a pull stopped from here on leaves a directory that is not a pull's.
    std::fs::remove_file(dir.join(PULL_RECORD))
        .with_context(|| format!("removing the earlier pull in {}", dir.display()))?;
    for entry in entries {
        let path = entry.path();
        let removed =
            if entry.file_type()?.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing the earlier pull's {}", path.display())),
        }
    }
    Ok(())
}

/// Copy a file or a folder tree; links are refused (a model's files are plain files, and a
/// link could lead out of the registry's artifact root).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(from).with_context(|| format!("reading {}", from.display()))?;
    if meta.is_dir() {
        std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
        for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else if meta.is_file() {
        std::fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        Ok(())
    } else {
        bail!("{} is not a plain file or folder; not copied", from.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_pulled_into_when_empty_or_an_earlier_pull() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("models");
        prepare(&dir).unwrap();
        assert!(dir.is_dir());
        std::fs::write(dir.join("model.onnx"), b"x").unwrap();
        let e = prepare(&dir).unwrap_err().to_string();
        assert!(e.contains("not empty") && e.contains("model.onnx"), "{e}");
        std::fs::write(dir.join(PULL_RECORD), b"{}").unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        prepare(&dir).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "the earlier pull's files are gone");
    }

    #[test]
    fn trees_are_copied_and_links_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("data")).unwrap();
        std::fs::write(src.join("MLmodel"), b"m").unwrap();
        std::fs::write(src.join("data/w.bin"), b"w").unwrap();
        copy_tree(&src, &tmp.path().join("dst")).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("dst/data/w.bin")).unwrap(), b"w");
        std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
        let e = copy_tree(&src, &tmp.path().join("dst2")).unwrap_err().to_string();
        assert!(e.contains("not a plain file"), "{e}");
    }

    #[test]
    fn the_record_names_the_registry_without_credentials() {
        assert_eq!(
            public_registry("https://user:secret@mlflow.example:5000/prefix?token=x"),
            "https://mlflow.example:5000/prefix"
        );
        assert_eq!(public_registry("sqlite:////data/registry.db"), "sqlite:////data/registry.db");
    }
}
