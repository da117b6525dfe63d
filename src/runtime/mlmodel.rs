//! Reading a model's files: an MLflow model directory (`MLmodel` with an `onnx` flavor) or a
//! bare `.onnx` file. Paths named inside `MLmodel` must stay inside the model directory.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::schema::Signature;
use super::RuntimeError;

#[derive(Debug, Default, Deserialize)]
struct RawMlModel {
    #[serde(default)]
    flavors: BTreeMap<String, serde_yaml::Value>,
    #[serde(default)]
    signature: Option<RawSignature>,
    #[serde(default)]
    saved_input_example_info: Option<RawExampleInfo>,
}

#[derive(Debug, Default, Deserialize)]
struct RawSignature {
    #[serde(default)]
    inputs: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawExampleInfo {
    #[serde(default)]
    artifact_path: Option<String>,
    #[serde(default)]
    serving_input_path: Option<String>,
}

/// The files of a model, located.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The directory holding the model (the `.onnx` file's folder for a bare file).
    pub root: PathBuf,
    pub onnx: PathBuf,
    pub signature: Option<Signature>,
    /// A scoring payload (`serving_input_example.json`) to warm the model up with.
    pub serving_example: Option<PathBuf>,
    /// True when an `MLmodel` file was read.
    pub is_mlflow_model: bool,
}

fn invalid(path: &Path, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::InvalidModel { path: path.display().to_string(), reason: reason.into() }
}

/// Join a relative path from `MLmodel` under `root`, refusing absolute paths and `..`.
pub fn contained(root: &Path, rel: &str) -> Result<PathBuf, RuntimeError> {
    let p = Path::new(rel);
    if p.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(invalid(root, format!("path '{rel}' in MLmodel leaves the model directory")));
    }
    Ok(root.join(p))
}

impl ModelFiles {
    /// Locate the model at `path`: a `.onnx` file, or a directory with `MLmodel` (onnx flavor)
    /// or with exactly one `.onnx` file.
    pub fn locate(path: &Path) -> Result<ModelFiles, RuntimeError> {
        let io = |e: std::io::Error| RuntimeError::Io { path: path.display().to_string(), source: e };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.is_file() {
            if path.extension().and_then(|e| e.to_str()) != Some("onnx") {
                return Err(invalid(path, "expected a .onnx file or an MLflow model directory"));
            }
            let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
            return Ok(ModelFiles {
                root,
                onnx: path.to_path_buf(),
                signature: None,
                serving_example: None,
                is_mlflow_model: false,
            });
        }
        let mlmodel = path.join("MLmodel");
        if mlmodel.is_file() {
            return Self::from_mlmodel(path, &mlmodel);
        }
        let mut onnx_files = Vec::new();
        for entry in std::fs::read_dir(path).map_err(io)? {
            let entry = entry.map_err(io)?;
            let p = entry.path();
            if p.extension().and_then(|e| e.to_str()) == Some("onnx") && p.is_file() {
                onnx_files.push(p);
            }
        }
        match onnx_files.len() {
            1 => Ok(ModelFiles {
                root: path.to_path_buf(),
                onnx: onnx_files.remove(0),
                signature: None,
                serving_example: None,
                is_mlflow_model: false,
            }),
            0 => Err(invalid(path, "the directory has no MLmodel file and no .onnx file")),
            n => Err(invalid(path, format!("the directory has no MLmodel file and {n} .onnx files; name one"))),
        }
    }

    fn from_mlmodel(root: &Path, mlmodel: &Path) -> Result<ModelFiles, RuntimeError> {
        let text = std::fs::read_to_string(mlmodel)
            .map_err(|e| RuntimeError::Io { path: mlmodel.display().to_string(), source: e })?;
        let raw: RawMlModel =
            serde_yaml::from_str(&text).map_err(|e| invalid(mlmodel, format!("MLmodel is not valid YAML: {e}")))?;
        let onnx_flavor = raw.flavors.get("onnx").ok_or_else(|| {
            let present: Vec<&str> = raw.flavors.keys().map(String::as_str).collect();
            invalid(
                mlmodel,
                format!(
                    "MLmodel has no 'onnx' flavor (flavors present: {present:?}); regserve serves ONNX models only"
                ),
            )
        })?;
        let data = onnx_flavor
            .get("data")
            .and_then(|d| d.as_str())
            .ok_or_else(|| invalid(mlmodel, "the onnx flavor has no 'data' entry naming the model file"))?;
        let onnx = contained(root, data)?;
        if !onnx.is_file() {
            return Err(invalid(root, format!("the onnx flavor names '{data}', which is not in the model directory")));
        }
        let signature = match raw.signature.and_then(|s| s.inputs) {
            Some(json) => Some(Signature::parse(&json).map_err(|e| invalid(mlmodel, e))?),
            None => None,
        };
        let serving_example = match raw.saved_input_example_info {
            Some(info) => {
                let rel = info.serving_input_path.or(info.artifact_path.filter(|p| p.contains("serving")));
                match rel {
                    Some(rel) => Some(contained(root, &rel)?).filter(|p| p.is_file()),
                    None => None,
                }
            }
            None => None,
        }
        .or_else(|| Some(root.join("serving_input_example.json")).filter(|p| p.is_file()));
        Ok(ModelFiles { root: root.to_path_buf(), onnx, signature, serving_example, is_mlflow_model: true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_paths_leaving_the_directory() {
        let root = Path::new("/models/m");
        assert!(contained(root, "model.onnx").is_ok());
        assert!(contained(root, "./sub/model.onnx").is_ok());
        assert!(contained(root, "../other/model.onnx").is_err());
        assert!(contained(root, "/etc/passwd").is_err());
        assert!(contained(root, "sub/../../x").is_err());
    }

    #[test]
    fn reads_mlmodel_and_rejects_other_flavors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.onnx"), b"x").unwrap();
        std::fs::write(
            dir.path().join("MLmodel"),
            "flavors:\n  onnx:\n    data: model.onnx\nsignature:\n  inputs: '[{\"type\": \"float\", \"name\": \"a\"}]'\n",
        )
        .unwrap();
        let f = ModelFiles::locate(dir.path()).unwrap();
        assert_eq!(f.onnx, dir.path().join("model.onnx"));
        assert_eq!(f.signature.unwrap().column_names().unwrap(), vec!["a"]);

        std::fs::write(dir.path().join("MLmodel"), "flavors:\n  sklearn:\n    pickled_model: model.pkl\n").unwrap();
        let e = ModelFiles::locate(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no 'onnx' flavor") && e.contains("sklearn"), "{e}");

        std::fs::write(dir.path().join("MLmodel"), "flavors:\n  onnx:\n    data: ../model.onnx\n").unwrap();
        assert!(ModelFiles::locate(dir.path()).unwrap_err().to_string().contains("leaves the model directory"));
    }
}
