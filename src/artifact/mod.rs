//! Where a version's files are, and getting them onto local disk.
//!
//! The embedded registry keeps files under one artifact root, addressed as
//! `mlflow-artifacts:/<relative path>` (the form `mlflow server` uses, so MLflow clients can
//! download them through the artifact proxy). Imports are copied into a staging folder and
//! renamed into place, so a partial copy is never visible under its final name.

pub mod cache;
pub mod fetch;
pub mod store;

use std::path::{Component, Path, PathBuf};

/// Failures to find or fetch artifacts.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("artifact URI scheme '{scheme}' is not supported (in '{uri}'); regserve reads mlflow-artifacts:/, file:// and local paths here, and also s3://, gs://, wasbs://, abfss://, http(s)://, runs:/ and models:/ when it downloads a remote registry's versions")]
    UnsupportedScheme { scheme: String, uri: String },
    #[error("invalid artifact path '{0}': it must stay inside the artifact root (no '..', no absolute paths, no links leading out)")]
    PathEscapes(String),
    #[error("artifact not found: {0}")]
    NotFound(String),
    #[error("artifact I/O error at {path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// An object store (S3, GCS, Azure Blob) failed; `message` is for the log (secrets
    /// blanked), `public` is short and names no path, URL or library message, only the bucket.
    #[error("{message}")]
    Store { kind: store::StoreErrorKind, message: String, public: String },
}

impl FetchError {
    /// Whether trying again later may help (the store could not be reached, or the bytes did
    /// not match).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            FetchError::Store { kind: store::StoreErrorKind::Unavailable | store::StoreErrorKind::Mismatch, .. }
        )
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io { path: path.display().to_string(), source }
}

/// The local artifact root of the embedded registry.
#[derive(Debug, Clone)]
pub struct ArtifactRoot {
    root: PathBuf,
}

pub const SCHEME: &str = "mlflow-artifacts:";

/// The folder under the artifact root holding the copies `regserve models register` makes
/// (`mlflow-artifacts:/registry/<id>`): the registry owns them, so deleting their last version
/// removes them, and the artifact proxy does not write there.
pub const REGISTERED_PREFIX: &str = "registry";

/// Marks the hidden temporary file an artifact-proxy upload is written to before its rename:
/// `.<name>.upload-<uuid>` (swept when old, see `registration::sweep`).
pub const UPLOAD_MARK: &str = ".upload-";

/// The scheme of `uri` in lower case, and what follows its `:` — `None` for a path (no `:`, a
/// leading `/`, or a one-letter "scheme" such as `C:`). Schemes are case-insensitive (RFC
/// 3986): every scheme comparison goes through here, so `FILE://` is `file://`.
pub fn scheme_of(uri: &str) -> Option<(String, &str)> {
    let (scheme, rest) = uri.split_once(':')?;
    let valid = scheme.len() > 1
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then(|| (scheme.to_ascii_lowercase(), rest))
}

/// `uri` with its scheme in lower case (`FILE:///x` → `file:///x`); a path is returned as is.
pub fn normalize_scheme(uri: &str) -> std::borrow::Cow<'_, str> {
    match scheme_of(uri) {
        Some((scheme, rest)) if !uri.starts_with(scheme.as_str()) => format!("{scheme}:{rest}").into(),
        _ => uri.into(),
    }
}

impl ArtifactRoot {
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, FetchError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(io(&root))?;
        let root = root.canonicalize().map_err(io(&root))?;
        Ok(ArtifactRoot { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The local path of a relative artifact path, refusing anything that would leave the
    /// root: `..`, absolute paths, percent-encoded variants of them, and symlinks leading out.
    pub fn path_of(&self, rel: &str) -> Result<PathBuf, FetchError> {
        let decoded = decode_relative(rel)?;
        let full = self.root.join(Path::new(&decoded));
        // Resolve links of whatever part exists and check it is still under the root.
        // Components only: with a trailing slash, `x/` names what the link `x` points to.
        let normalized: PathBuf = full.components().collect();
        let mut existing = normalized.as_path();
        // `symlink_metadata`, not `exists`: a dangling link is there, and is checked below.
        while existing.symlink_metadata().is_err() {
            match existing.parent() {
                Some(p) => existing = p,
                None => break,
            }
        }
        // A link that does not resolve (dangling) leads wherever its target appears later.
        match existing.canonicalize() {
            Ok(real) if real.starts_with(&self.root) => {}
            _ => return Err(FetchError::PathEscapes(rel.to_string())),
        }
        Ok(full)
    }

    /// Copy a file or directory into `<root>/<prefix>/<unique id>/` and return its
    /// `mlflow-artifacts:/` URI and local path. A bare file keeps its file name.
    pub fn import(&self, src: &Path, prefix: &str) -> Result<(String, PathBuf), FetchError> {
        let meta = std::fs::metadata(src).map_err(|_| FetchError::NotFound(src.display().to_string()))?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let staging = self.root.join(".staging").join(&id);
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        let copied = if meta.is_dir() {
            copy_dir(src, &staging)
        } else {
            let name = src.file_name().ok_or_else(|| FetchError::NotFound(src.display().to_string()))?;
            std::fs::copy(src, staging.join(name)).map(|_| ()).map_err(io(src))
        };
        if let Err(e) = copied {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        let rel = format!("{}/{id}", prefix.trim_matches('/'));
        let dest = self.path_of(&rel)?;
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::rename(&staging, &dest).map_err(io(&dest))?;
        sync_dir(dest.parent());
        Ok((format!("{SCHEME}/{rel}"), dest))
    }

    /// The local path of an artifact URI this root can serve: `mlflow-artifacts:/...`,
    /// `file://...` or a plain path.
    pub fn local_path(&self, uri: &str) -> Result<PathBuf, FetchError> {
        let uri = normalize_scheme(uri);
        let uri = uri.as_ref();
        if let Some(rest) = uri.strip_prefix(SCHEME) {
            // mlflow-artifacts:/path or mlflow-artifacts://host/path
            let rel = match rest.strip_prefix("//") {
                Some(with_host) => with_host.split_once('/').map(|(_, p)| p).unwrap_or(""),
                None => rest.trim_start_matches('/'),
            };
            return self.path_of(rel);
        }
        if let Some(path) = uri.strip_prefix("file://") {
            let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy().into_owned();
            return Ok(PathBuf::from(decoded));
        }
        match scheme_of(uri) {
            None => Ok(PathBuf::from(uri)),
            Some((scheme, _)) => Err(FetchError::UnsupportedScheme { scheme, uri: uri.to_string() }),
        }
    }

    /// Remove files that this root owns (a URI outside the root is left alone).
    pub fn remove(&self, uri: &str) -> Result<(), FetchError> {
        if !normalize_scheme(uri).starts_with(SCHEME) {
            return Ok(());
        }
        let path = self.local_path(uri)?;
        if path == self.root {
            return Ok(());
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => std::fs::remove_file(&path).map_err(io(&path)),
            Err(e) => Err(FetchError::Io { path: path.display().to_string(), source: e }),
        }
    }
}

/// The artifact path of an `mlflow-artifacts:/<path>` or `mlflow-artifacts://host/<path>`
/// location (any case of the scheme), still percent-encoded; `None` for other locations.
pub fn proxy_relative(location: &str) -> Option<String> {
    let normalized = normalize_scheme(location);
    let rest = normalized.strip_prefix(SCHEME)?;
    Some(
        match rest.strip_prefix("//") {
            Some(with_host) => with_host.split_once('/').map(|(_, p)| p).unwrap_or(""),
            None => rest.trim_start_matches('/'),
        }
        .to_string(),
    )
}

/// `rel` (a relative artifact path, percent-encoded as in a request path) decoded once and
/// checked: no `..`, no absolute path, no `\\` or NUL — the rule of every artifact root.
pub fn decode_relative(rel: &str) -> Result<String, FetchError> {
    let decoded = percent_encoding::percent_decode_str(rel)
        .decode_utf8()
        .map_err(|_| FetchError::PathEscapes(rel.to_string()))?;
    if decoded.contains('\0')
        || decoded.contains('\\')
        || Path::new(decoded.as_ref()).components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(FetchError::PathEscapes(rel.to_string()));
    }
    Ok(decoded.into_owned())
}

/// Where the registry server's artifact proxy keeps the files it serves and receives
/// (`regserve server --artifacts-destination`): a local folder, or a bucket shared by several
/// replicas. The server's handlers list, send and write through this one type (see
/// `server::artifacts_api`), with the same path rules for both.
#[derive(Debug, Clone)]
pub enum Destination {
    /// The data dir's artifact root (the default).
    Local(ArtifactRoot),
    /// `s3://bucket/prefix`, `gs://…`, `wasbs://…`: artifact path `P` is the key `prefix/P`.
    Bucket(store::Bucket),
}

impl Destination {
    /// The object key of a relative artifact path (checked as [`ArtifactRoot::path_of`]
    /// checks paths; a trailing `/` is dropped).
    pub fn key_of(bucket: &store::Bucket, rel: &str) -> Result<String, FetchError> {
        let decoded = decode_relative(rel)?;
        let parts: Vec<&str> = decoded.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
        let prefix = bucket.uri().prefix.as_str();
        Ok(match (prefix.is_empty(), parts.is_empty()) {
            (true, _) => parts.join("/"),
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}/{}", parts.join("/")),
        })
    }
}

/// Most files a copy of a version from the destination ([`Destination::local_copy`]) takes.
const MAX_COPY_FILES: usize = 20_000;

/// Marks the folders [`Destination::local_copy`] downloads into: `.staging/copy-<id>`.
pub const COPY_MARK: &str = "copy-";

impl Destination {
    /// The files of `location` on local disk, and whether they are a copy the caller removes
    /// (with [`Destination::remove_copy`]). A local destination answers
    /// [`ArtifactRoot::local_path`]. From a bucket, an `mlflow-artifacts:/` location's objects
    /// are downloaded one after the other (each streamed to disk, checked against the listed
    /// size) into `<local root>/.staging/copy-<id>/` (swept when left behind); a location
    /// listing nothing is taken as one object (a bare `.onnx` file). A missing location is
    /// `Ok` with a path that does not exist, as on disk.
    pub async fn local_copy(&self, local: &ArtifactRoot, location: &str) -> Result<(PathBuf, bool), FetchError> {
        let bucket = match self {
            Destination::Bucket(bucket) if normalize_scheme(location).starts_with(SCHEME) => bucket,
            _ => return Ok((local.local_path(location)?, false)),
        };
        let rel = proxy_relative(location).unwrap_or_default();
        let key = Destination::key_of(bucket, &rel)?;
        let dir = local.root().join(".staging").join(format!("{COPY_MARK}{}", uuid::Uuid::new_v4().simple()));
        let result = async {
            tokio::fs::create_dir_all(&dir).await.map_err(io(&dir))?;
            let mut objects = bucket.list(&key, MAX_COPY_FILES).await?;
            let mut single = None;
            if objects.is_empty() {
                match bucket.head(&key).await {
                    Ok(object) => {
                        single = Some(dir.join(&object.rel));
                        objects.push(object);
                    }
                    Err(FetchError::Store { kind: store::StoreErrorKind::NotFound, .. }) => {
                        return Ok(dir.join("missing"));
                    }
                    Err(e) => return Err(e),
                }
            }
            for object in &objects {
                let target = dir.join(decode_relative(&object.rel.replace('%', "%25"))?);
                if let Some(parent) = target.parent() {
                    tokio::fs::create_dir_all(parent).await.map_err(io(parent))?;
                }
                bucket.download(object, &target, &|_| {}).await?;
            }
            Ok(single.unwrap_or_else(|| dir.clone()))
        }
        .await;
        match result {
            Ok(path) => Ok((path, true)),
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&dir).await;
                Err(e)
            }
        }
    }

    /// Remove a copy made by [`Destination::local_copy`] (the `copy-<id>` folder holding `path`).
    pub fn remove_copy(local: &ArtifactRoot, path: &Path) {
        let staging = local.root().join(".staging");
        let Ok(rest) = path.strip_prefix(&staging) else { return };
        if let Some(Component::Normal(first)) = rest.components().next() {
            if first.to_string_lossy().starts_with(COPY_MARK) {
                let _ = std::fs::remove_dir_all(staging.join(first));
            }
        }
    }
}

/// Copy a directory tree; symlinks are refused (they could point anywhere).
fn copy_dir(src: &Path, dest: &Path) -> Result<(), FetchError> {
    for entry in std::fs::read_dir(src).map_err(io(src))? {
        let entry = entry.map_err(io(src))?;
        let ty = entry.file_type().map_err(io(src))?;
        let from = entry.path();
        let to = dest.join(entry.file_name());
        if ty.is_symlink() {
            return Err(FetchError::PathEscapes(from.display().to_string()));
        } else if ty.is_dir() {
            std::fs::create_dir_all(&to).map_err(io(&to))?;
            copy_dir(&from, &to)?;
        } else {
            std::fs::copy(&from, &to).map_err(io(&from))?;
            if let Ok(f) = std::fs::File::open(&to) {
                let _ = f.sync_all();
            }
        }
    }
    Ok(())
}

fn sync_dir(dir: Option<&Path>) {
    if let Some(d) = dir {
        if let Ok(f) = std::fs::File::open(d) {
            let _ = f.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_paths_out_of_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = ArtifactRoot::new(dir.path().join("a")).unwrap();
        assert!(root.path_of("x/y.onnx").is_ok());
        for bad in ["../x", "/etc/passwd", "x/../../y", "%2e%2e/x", "x/%2E%2E/%2e%2e/y", "%2Fetc%2Fpasswd", "a\\..\\b"]
        {
            assert!(matches!(root.path_of(bad), Err(FetchError::PathEscapes(_))), "{bad}");
        }
        std::os::unix::fs::symlink(dir.path(), root.root().join("link")).unwrap();
        assert!(matches!(root.path_of("link/x"), Err(FetchError::PathEscapes(_))));
    }

    #[test]
    fn import_copies_and_names_a_uri() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("m");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("MLmodel"), "x").unwrap();
        std::fs::write(src.join("sub/f"), "y").unwrap();
        let root = ArtifactRoot::new(dir.path().join("root")).unwrap();
        let (uri, path) = root.import(&src, "registry").unwrap();
        assert!(uri.starts_with("mlflow-artifacts:/registry/"), "{uri}");
        assert_eq!(std::fs::read_to_string(path.join("sub/f")).unwrap(), "y");
        assert_eq!(root.local_path(&uri).unwrap(), path);
        assert!(!root.root().join(".staging").read_dir().unwrap().any(|_| true));
        root.remove(&uri).unwrap();
        assert!(!path.exists());
        assert!(
            matches!(root.local_path("s3://bucket/x"), Err(FetchError::UnsupportedScheme { scheme, .. }) if scheme == "s3")
        );
        // Any case of a scheme is that scheme.
        assert_eq!(root.local_path(&uri.replace("mlflow-artifacts:", "MLflow-Artifacts:")).unwrap(), path);
        assert_eq!(root.local_path("FILE:///srv/a%20b").unwrap(), PathBuf::from("/srv/a b"));
    }

    /// The bucket destination: keys under the prefix with the local root's path rules, a
    /// streamed upload, a folder listing, a streamed read, and copies for test loads.
    #[tokio::test]
    async fn a_bucket_destination_writes_lists_reads_and_copies() {
        use futures_util::StreamExt;
        let bucket = store::Bucket::in_memory("s3://bkt/pre/fix");
        assert_eq!(Destination::key_of(&bucket, "a/b%20c").unwrap(), "pre/fix/a/b c");
        assert_eq!(Destination::key_of(&bucket, "a//./b/").unwrap(), "pre/fix/a/b");
        assert_eq!(Destination::key_of(&bucket, "").unwrap(), "pre/fix");
        for bad in ["../x", "/etc/passwd", "%2e%2e/x", "a\\b", "x/../../y"] {
            assert!(matches!(Destination::key_of(&bucket, bad), Err(FetchError::PathEscapes(_))), "{bad}");
        }
        for (rel, body) in [("m/MLmodel", "flavors: {onnx: {}}"), ("m/sub/w.bin", "weights"), ("one.onnx", "x")] {
            let mut up = bucket.upload(&Destination::key_of(&bucket, rel).unwrap());
            for chunk in body.as_bytes().chunks(3) {
                up.write(bytes::Bytes::copy_from_slice(chunk)).await.unwrap();
            }
            up.finish().await.unwrap();
        }
        // An aborted upload leaves nothing.
        let mut up = bucket.upload("pre/fix/m/partial");
        up.write(bytes::Bytes::from_static(b"half")).await.unwrap();
        up.abort().await;
        let mut listed = bucket.list_dir("pre/fix/m", 10).await.unwrap();
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(
            listed,
            [
                store::DirEntry { name: "MLmodel".into(), is_dir: false, size: "flavors: {onnx: {}}".len() as u64 },
                store::DirEntry { name: "sub".into(), is_dir: true, size: 0 }
            ]
        );
        assert!(bucket.list_dir("pre/fix/m", 1).await.is_err());
        assert!(bucket.has_children("pre/fix/m/sub").await.unwrap());
        assert!(!bucket.has_children("pre/fix/m/MLmodel").await.unwrap());
        let (size, mut stream) = bucket.get_stream("pre/fix/m/sub/w.bin").await.unwrap().unwrap();
        let mut got = Vec::new();
        while let Some(chunk) = stream.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!((size, got.as_slice()), (7, b"weights".as_slice()));
        assert!(bucket.get_stream("pre/fix/m/none").await.unwrap().is_none());

        let dir = tempfile::tempdir().unwrap();
        let local = ArtifactRoot::new(dir.path().join("root")).unwrap();
        let dest = Destination::Bucket(bucket);
        let (copy, owned) = dest.local_copy(&local, "mlflow-artifacts:/m").await.unwrap();
        assert!(owned);
        assert_eq!(std::fs::read_to_string(copy.join("sub/w.bin")).unwrap(), "weights");
        Destination::remove_copy(&local, &copy);
        assert!(!copy.exists());
        let (single, _) = dest.local_copy(&local, "mlflow-artifacts://host:5000/one.onnx").await.unwrap();
        assert_eq!(single.file_name().unwrap(), "one.onnx");
        Destination::remove_copy(&local, &single);
        assert!(!single.exists() && !single.parent().unwrap().exists());
        let (missing, _) = dest.local_copy(&local, "mlflow-artifacts:/nothing").await.unwrap();
        assert!(!missing.exists());
        Destination::remove_copy(&local, &missing);
        assert_eq!(local.root().join(".staging").read_dir().unwrap().count(), 0);
        // Other schemes are not the destination's.
        assert!(matches!(dest.local_copy(&local, "s3://other/x").await, Err(FetchError::UnsupportedScheme { .. })));
        // A local destination is the local root.
        let (path, owned) = Destination::Local(local.clone()).local_copy(&local, "mlflow-artifacts:/m").await.unwrap();
        assert_eq!((path, owned), (local.root().join("m"), false));
    }

    #[test]
    fn schemes_are_case_insensitive_and_paths_have_none() {
        assert_eq!(scheme_of("FILE:///etc"), Some(("file".to_string(), "///etc")));
        assert_eq!(scheme_of("Mlflow-Artifacts:/0/x"), Some(("mlflow-artifacts".to_string(), "/0/x")));
        for path in ["/etc/passwd", "rel/path", "C:\\models\\m", " file:///etc", "", ":x"] {
            assert_eq!(scheme_of(path), None, "{path}");
        }
        assert_eq!(normalize_scheme("FiLe:/etc"), "file:/etc");
        assert_eq!(normalize_scheme("s3://Bucket/X"), "s3://Bucket/X");
        assert_eq!(normalize_scheme("/Abs/Path"), "/Abs/Path");
    }
}
