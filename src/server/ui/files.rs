//! What the version page shows from a version's files: the MLmodel's signature and its input
//! example — only for files under the artifact root (anything else is "not available"), read
//! with size limits, never following a path out of the root.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::artifact::ArtifactRoot;
use crate::runtime::mlmodel::contained;

const MAX_MLMODEL_BYTES: u64 = 1 << 20;
const MAX_EXAMPLE_BYTES: u64 = 64 << 10;

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
    let yaml: serde_yaml::Value = serde_yaml::from_str(&read_limited(&mlmodel, MAX_MLMODEL_BYTES)?)
        .map_err(|e| format!("the MLmodel is not valid YAML: {e}"))?;
    let signature = yaml.get("signature");
    let fields = |key: &str| signature.and_then(|s| s.get(key)).and_then(|v| v.as_str()).map(parse_fields);
    let flavors = yaml
        .get("flavors")
        .and_then(|f| f.as_mapping())
        .map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let example = yaml
        .get("saved_input_example_info")
        .and_then(|i| i.get("artifact_path"))
        .and_then(|p| p.as_str())
        .and_then(|rel| contained(&dir, rel).ok())
        .and_then(|p| inside(&p))
        .and_then(|p| read_limited(&p, MAX_EXAMPLE_BYTES).ok());
    Ok(ModelFiles { inputs: fields("inputs"), outputs: fields("outputs"), flavors, example })
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
}
