//! What the version page shows from a version's files: the MLmodel's signature and its input
//! example — only for files under the artifact root (anything else is "not available"), read
//! with size limits, never following a path out of the root.
//!
//! The MLmodel is parsed with the bounds registration applies
//! ([`parse_mlmodel`](crate::runtime::mlmodel::parse_mlmodel)), and what the page shows from it
//! is kept in a small cache keyed by the file's path, size and modification time, so viewing a
//! page again does not parse it again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use serde_json::Value;

use crate::artifact::ArtifactRoot;
use crate::runtime::mlmodel::{contained, parse_mlmodel, read_mlmodel};

const MAX_EXAMPLE_BYTES: u64 = 64 << 10;
/// MLmodels whose summary is kept (each a few KB: field names and types).
const CACHE_ENTRIES: usize = 256;

/// One input or output of a signature.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    /// `float`, `string`, `tensor<float32>`, ...
    pub ty: String,
    /// A tensor's shape, `[-1, 4]`.
    pub shape: String,
    pub optional: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ModelFiles {
    /// `None`: the MLmodel has no signature.
    pub inputs: Option<Vec<Field>>,
    pub outputs: Option<Vec<Field>>,
    pub flavors: Vec<String>,
    /// The input example as stored, cut at 64 KiB.
    pub example: Option<String>,
}

/// Read what there is to show at `location` (a version's download URI), or say why not.
/// Blocking.
pub fn read(artifacts: &ArtifactRoot, location: &str) -> Result<ModelFiles, String> {
    let path = artifacts.local_path(location).map_err(|_| format!("the files at {location} are not local"))?;
    let inside =
        |p: &Path| -> Option<PathBuf> { p.canonicalize().ok().filter(|real| real.starts_with(artifacts.root())) };
    let Some(dir) = inside(&path) else {
        return Err(if path.exists() {
            format!("{location} is outside this server's artifact root")
        } else {
            format!("no files at {location}")
        });
    };
    if !dir.is_dir() {
        return Err("a bare model file has no MLmodel".into());
    }
    let mlmodel = inside(&dir.join("MLmodel")).ok_or("the version's files have no MLmodel")?;
    let cached = summary_of(&mlmodel);
    let summary = cached.as_ref().as_ref().map_err(Clone::clone)?;
    let example = summary
        .example_path
        .as_deref()
        .and_then(|rel| contained(&dir, rel).ok())
        .and_then(|p| inside(&p))
        .and_then(|p| read_limited(&p, MAX_EXAMPLE_BYTES).ok());
    Ok(ModelFiles {
        inputs: summary.inputs.clone(),
        outputs: summary.outputs.clone(),
        flavors: summary.flavors.clone(),
        example,
    })
}

/// What the page shows from one MLmodel.
#[derive(Debug)]
struct Summary {
    inputs: Option<Vec<Field>>,
    outputs: Option<Vec<Field>>,
    flavors: Vec<String>,
    example_path: Option<String>,
}

/// A parsed MLmodel (or why it could not be), valid while the file keeps its size and time.
type Cached = (u64, Option<SystemTime>, Arc<Result<Summary, String>>);

fn cache() -> &'static Mutex<HashMap<PathBuf, Cached>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Cached>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The summary of the MLmodel at `path` (canonical), from the cache when the file is unchanged.
fn summary_of(path: &Path) -> Arc<Result<Summary, String>> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return Arc::new(Err(format!("cannot read {}: {e}", path.display()))),
    };
    let (len, modified) = (meta.len(), meta.modified().ok());
    let found = {
        let cache = cache().lock().unwrap_or_else(|p| p.into_inner());
        cache.get(path).filter(|(l, m, _)| *l == len && *m == modified).map(|(_, _, s)| s.clone())
    };
    match found {
        Some(s) => s,
        None => {
            let parsed = Arc::new(parse_summary(path));
            let mut cache = cache().lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= CACHE_ENTRIES {
                // Versions' files rarely change: forgetting everything now and then is enough.
                cache.clear();
            }
            cache.insert(path.to_path_buf(), (len, modified, parsed.clone()));
            parsed
        }
    }
}

fn parse_summary(path: &Path) -> Result<Summary, String> {
    let text = read_mlmodel(path).map_err(|e| match e {
        crate::runtime::RuntimeError::InvalidModel { reason, .. } => reason,
        other => other.to_string(),
    })?;
    let yaml: serde_yaml::Value = parse_mlmodel(&text).map_err(|e| e.to_string())?;
    let signature = yaml.get("signature");
    let fields = |key: &str| signature.and_then(|s| s.get(key)).and_then(|v| v.as_str()).map(parse_fields);
    let flavors = yaml
        .get("flavors")
        .and_then(|f| f.as_mapping())
        .map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let example_path = yaml
        .get("saved_input_example_info")
        .and_then(|i| i.get("artifact_path"))
        .and_then(|p| p.as_str())
        .map(str::to_string);
    Ok(Summary { inputs: fields("inputs"), outputs: fields("outputs"), flavors, example_path })
}

fn read_limited(path: &Path, limit: u64) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(limit).read_to_string(&mut text).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text)
}

/// MLflow's signature JSON: column specs `{"name", "type", "required"}` or tensor specs
/// `{"name", "type": "tensor", "tensor-spec": {"dtype", "shape"}}`.
fn parse_fields(json: &str) -> Vec<Field> {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(json) else { return Vec::new() };
    items
        .iter()
        .map(|item| {
            let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
            let spec = item.get("tensor-spec");
            let ty = match spec {
                Some(spec) => format!("tensor<{}>", s(spec.get("dtype"))),
                None => s(item.get("type")),
            };
            let shape = spec.and_then(|sp| sp.get("shape")).map(|v| v.to_string()).unwrap_or_default();
            Field {
                name: s(item.get("name")),
                ty,
                shape,
                optional: item.get("required").and_then(Value::as_bool) == Some(false),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_signature_and_example_of_a_model_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = ArtifactRoot::new(dir.path().join("artifacts")).unwrap();
        let iris = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/iris-v1");
        let (uri, _) = root.import(&iris, "registry").unwrap();
        let files = read(&root, &uri).unwrap();
        let inputs = files.inputs.unwrap();
        assert_eq!(inputs.iter().map(|f| f.name.as_str()).collect::<Vec<_>>()[..2], ["sepal_length", "sepal_width"]);
        assert_eq!(inputs[0].ty, "float");
        let outputs = files.outputs.unwrap();
        assert_eq!((outputs[1].ty.as_str(), outputs[1].shape.as_str()), ("tensor<float32>", "[-1,3]"));
        assert!(files.example.unwrap().contains("sepal_length"));
        assert!(files.flavors.contains(&"onnx".to_string()));

        // Elsewhere: not available, with the reason.
        assert!(read(&root, "s3://bucket/model").unwrap_err().contains("not local"));
        assert!(read(&root, &iris.display().to_string()).unwrap_err().contains("outside"));
        assert!(read(&root, "mlflow-artifacts:/registry/nothing").unwrap_err().contains("no files"));
    }

    #[test]
    fn an_mlmodel_is_parsed_once_with_the_registration_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let root = ArtifactRoot::new(dir.path().join("artifacts")).unwrap();
        let iris = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/iris-v1");
        let (uri, local) = root.import(&iris, "registry").unwrap();
        let mlmodel = local.join("MLmodel").canonicalize().unwrap();
        let first = summary_of(&mlmodel);
        assert!(Arc::ptr_eq(&first, &summary_of(&mlmodel)), "a second view parses again");

        // A changed file is parsed again; one over the bounds is "not available", with why.
        std::fs::write(&mlmodel, format!("flavors: {}", "[".repeat(60_000))).unwrap();
        let started = std::time::Instant::now();
        let why = read(&root, &uri).unwrap_err();
        assert!(why.contains("levels deep"), "{why}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
        let again = summary_of(&mlmodel);
        assert!(Arc::ptr_eq(&again, &summary_of(&mlmodel)), "a refused MLmodel is not parsed again either");
    }
}
