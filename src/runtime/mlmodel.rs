//! Reading a model's files: an MLflow model directory (`MLmodel` with an `onnx` flavor) or a
//! bare `.onnx` file. Paths named inside `MLmodel` must stay inside the model directory.
//!
//! Every `MLmodel` regserve reads (registration by the CLI, the REST API's test load, a remote
//! registration, serving, the UI's version page) goes through [`read_mlmodel`] and
//! [`parse_mlmodel`], which bound the work: at most [`MAX_MLMODEL_BYTES`], collections nested at
//! most [`MAX_MLMODEL_DEPTH`] deep, at most [`MAX_MLMODEL_NODES`] nodes with aliases expanded.
//! libyaml (under `serde_yaml`) spends time in the flow nesting depth for every token, so
//! 60,000 nested `[` took 17 s; and it expands aliases, so a few KB can stand for millions of
//! nodes. The shape is checked first in one linear pass with `saphyr-parser` (a YAML parser
//! streaming events, with its own flow-nesting cap), and only a document within the bounds
//! reaches `serde_yaml`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use serde::de::DeserializeOwned;
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

/// The largest `MLmodel` file read, in bytes (MLflow writes a few KB; a signature of 10,000
/// columns is about half a MB).
pub const MAX_MLMODEL_BYTES: u64 = 1 << 20;
/// The deepest nesting of mappings and sequences accepted in an `MLmodel` (MLflow's are 4 deep).
pub const MAX_MLMODEL_DEPTH: usize = 32;
/// The most nodes (scalars and collections, with aliases expanded) accepted in an `MLmodel`.
pub const MAX_MLMODEL_NODES: u64 = 100_000;

/// Read an `MLmodel` file, refusing one over [`MAX_MLMODEL_BYTES`] before reading it.
pub fn read_mlmodel(path: &Path) -> Result<String, RuntimeError> {
    use std::io::Read;
    let io = |e: std::io::Error| RuntimeError::Io { path: path.display().to_string(), source: e };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    // One byte more than allowed tells an oversized file apart without reading all of it.
    let read = file.take(MAX_MLMODEL_BYTES + 1).read_to_string(&mut text);
    match read {
        Ok(n) if n as u64 > MAX_MLMODEL_BYTES => {
            Err(invalid(path, format!("MLmodel is larger than {MAX_MLMODEL_BYTES} bytes, the most regserve reads")))
        }
        Ok(_) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            Err(invalid(path, "MLmodel is not valid YAML: it is not UTF-8 text"))
        }
        Err(e) => Err(io(e)),
    }
}

/// Why an `MLmodel` text was not parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MlmodelError {
    /// Over one of this module's bounds (size, depth, values, documents): refused outright.
    #[error("{0}")]
    Bounds(String),
    /// Not YAML, or not the shape asked for.
    #[error("MLmodel is not valid YAML: {0}")]
    Syntax(String),
}

impl From<MlmodelError> for String {
    fn from(e: MlmodelError) -> String {
        e.to_string()
    }
}

/// Check that `text` is one YAML document within the bounds of this module, in one pass.
/// The message says which bound was passed and where.
pub fn check_mlmodel_shape(text: &str) -> Result<(), MlmodelError> {
    use saphyr_parser::{Event, Parser};
    use MlmodelError::Bounds;
    if text.len() as u64 > MAX_MLMODEL_BYTES {
        return Err(Bounds(format!("MLmodel is larger than {MAX_MLMODEL_BYTES} bytes, the most regserve reads")));
    }
    // Expanded node counts of the open collections (with their anchor ids), innermost last.
    let mut open: Vec<(usize, u64)> = Vec::new();
    // Expanded node counts of anchored nodes, by anchor id.
    let mut anchored: HashMap<usize, u64> = HashMap::new();
    let mut total: u64 = 0;
    let mut documents = 0;
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| {
            if e.info().contains("recursion limit") {
                // The parser's own cap on flow nesting, met while it looked ahead.
                Bounds(format!(
                    "MLmodel nests mappings and lists more than {MAX_MLMODEL_DEPTH} levels deep (at line {})",
                    e.marker().line()
                ))
            } else {
                MlmodelError::Syntax(e.to_string())
            }
        })?;
        let line = span.start.line();
        let nodes = match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(Bounds(format!(
                        "MLmodel holds more than one YAML document (the second starts at line {line})"
                    )));
                }
                0
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if open.len() >= MAX_MLMODEL_DEPTH {
                    return Err(Bounds(format!(
                        "MLmodel nests mappings and lists more than {MAX_MLMODEL_DEPTH} levels deep (at line {line})"
                    )));
                }
                open.push((anchor, 1));
                total += 1;
                0
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (anchor, n) = open.pop().unwrap_or((0, 0));
                if anchor != 0 {
                    anchored.insert(anchor, n);
                }
                n
            }
            Event::Scalar(_, _, anchor, _) => {
                if anchor != 0 {
                    anchored.insert(anchor, 1);
                }
                total += 1;
                1
            }
            Event::Alias(anchor) => {
                let n = anchored.get(&anchor).copied().unwrap_or(1);
                total = total.saturating_add(n);
                n
            }
            _ => 0,
        };
        if let Some((_, parent)) = open.last_mut() {
            *parent = parent.saturating_add(nodes);
        }
        if total > MAX_MLMODEL_NODES {
            return Err(Bounds(format!(
                "MLmodel has more than {MAX_MLMODEL_NODES} values once its aliases are expanded (at line {line})"
            )));
        }
    }
    Ok(())
}

/// Parse an `MLmodel` read by [`read_mlmodel`]: its shape is checked first
/// ([`check_mlmodel_shape`]), so `serde_yaml` only ever sees a bounded document.
pub fn parse_mlmodel<T: DeserializeOwned>(text: &str) -> Result<T, MlmodelError> {
    check_mlmodel_shape(text)?;
    serde_yaml::from_str(text).map_err(|e| MlmodelError::Syntax(e.to_string()))
}

/// Where a user finds the recipes that turn a model of another flavor into an ONNX one.
pub const BRING_YOUR_MODEL: &str = "recipes: \"Bring your model\" in regserve's README";

/// The converter to ONNX for an MLflow flavor, named as a user calls it.
fn converter(flavor: &str) -> Option<&'static str> {
    Some(match flavor {
        "sklearn" => "skl2onnx (`skl2onnx.to_onnx(model, X[:1])`)",
        "xgboost" => "onnxmltools (`onnxmltools.convert_xgboost`)",
        "lightgbm" => "onnxmltools (`onnxmltools.convert_lightgbm`)",
        "spark" => "onnxmltools (`onnxmltools.convert_sparkml`)",
        "catboost" => "CatBoost itself (`model.save_model(path, format=\"onnx\")`)",
        "pytorch" => "`torch.onnx.export`",
        "tensorflow" | "keras" => "tf2onnx (`tf2onnx.convert.from_keras`)",
        "paddle" => "paddle2onnx",
        "transformers" | "sentence_transformers" => "Hugging Face Optimum (`optimum-cli export onnx`)",
        _ => return None,
    })
}

/// What regserve says of a model that is not ONNX: the flavors it has (`None`: there is no
/// `MLmodel` and no `.onnx` file), that only ONNX is served, and what to do — convert it with
/// its flavor's converter and log the result with `mlflow.onnx.log_model`. The one place this
/// message is made: loading ([`ModelFiles::locate`], so `serve`, `predict`, `models register`)
/// and REST registration (a version's `status_message`) both say it. Bounded: at most 8
/// flavor names of at most 40 characters each (they come from the model's file).
pub fn not_onnx_model(flavors: Option<&[String]>) -> String {
    const SHOWN: usize = 8;
    const NAME_CHARS: usize = 40;
    let cut = |name: &String| match name.char_indices().nth(NAME_CHARS) {
        Some((i, _)) => format!("{}…", &name[..i]),
        None => name.clone(),
    };
    let what = match flavors {
        None => "no MLmodel with an onnx flavor and no .onnx file".to_string(),
        Some([]) => "its MLmodel names no flavor".to_string(),
        Some(names) => {
            let mut shown: Vec<String> = names.iter().take(SHOWN).map(cut).collect();
            if names.len() > SHOWN {
                shown.push(format!("and {} more", names.len() - SHOWN));
            }
            format!("MLmodel flavors: {}", shown.join(", "))
        }
    };
    let convert = match flavors.unwrap_or_default().iter().find_map(|f| converter(f)) {
        Some(c) => format!("convert it with {c}"),
        None => "convert it to ONNX with its framework's converter".to_string(),
    };
    format!(
        "not an ONNX model ({what}); regserve serves ONNX models only: {convert}, then log the ONNX model with `mlflow.onnx.log_model(onnx_model, name=..., registered_model_name=...)` ({BRING_YOUR_MODEL})"
    )
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
        let text = read_mlmodel(mlmodel)?;
        let raw: RawMlModel = parse_mlmodel(&text).map_err(|e| invalid(mlmodel, e.to_string()))?;
        let onnx_flavor = raw.flavors.get("onnx").ok_or_else(|| RuntimeError::NotOnnx {
            path: mlmodel.display().to_string(),
            flavors: raw.flavors.keys().cloned().collect(),
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
        let e = ModelFiles::locate(dir.path()).unwrap_err();
        assert!(matches!(&e, RuntimeError::NotOnnx { flavors, .. } if flavors == &["sklearn"]), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("not an ONNX model (MLmodel flavors: sklearn)") && e.contains("skl2onnx"), "{e}");

        std::fs::write(dir.path().join("MLmodel"), "flavors:\n  onnx:\n    data: ../model.onnx\n").unwrap();
        assert!(ModelFiles::locate(dir.path()).unwrap_err().to_string().contains("leaves the model directory"));
    }

    /// The message names the converter of the model's flavor, how to log the result, and
    /// where the recipes are; it stays short whatever the file holds.
    #[test]
    fn not_onnx_says_what_to_do() {
        let say = |flavors: &[&str]| not_onnx_model(Some(&flavors.iter().map(|f| f.to_string()).collect::<Vec<_>>()));
        for (flavor, converter) in [
            ("sklearn", "skl2onnx"),
            ("xgboost", "onnxmltools.convert_xgboost"),
            ("lightgbm", "onnxmltools.convert_lightgbm"),
            ("pytorch", "torch.onnx.export"),
            ("keras", "tf2onnx"),
        ] {
            let m = say(&["python_function", flavor]);
            assert!(m.starts_with(&format!("not an ONNX model (MLmodel flavors: python_function, {flavor})")), "{m}");
            assert!(m.contains(converter) && m.contains("mlflow.onnx.log_model"), "{m}");
            assert!(m.contains("\"Bring your model\""), "{m}");
        }
        let custom = say(&["python_function"]);
        assert!(custom.contains("its framework's converter"), "{custom}");
        assert!(not_onnx_model(None).contains("no MLmodel with an onnx flavor and no .onnx file"));
        let long_name = "f".repeat(10_000);
        let many: Vec<String> = (0..1000).map(|i| format!("{long_name}{i}")).collect();
        let m = not_onnx_model(Some(&many));
        assert!(m.len() < 1000 && m.contains("and 992 more"), "{} chars", m.len());
    }

    /// An MLmodel as MLflow writes it (block style, the signature as JSON in a string, an
    /// anchor PyYAML adds for a list used twice) passes the shape check.
    #[test]
    fn mlflow_mlmodels_pass_the_shape_check() {
        let iris =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/iris-v1/MLmodel")).unwrap();
        check_mlmodel_shape(&iris).unwrap();
        let columns: Vec<String> =
            (0..5_000).map(|i| format!("{{\"type\": \"double\", \"name\": \"c{i}\", \"required\": true}}")).collect();
        let wide = format!(
            "flavors:\n  onnx:\n    data: model.onnx\n    providers: &id001\n    - CPUExecutionProvider\n  python_function:\n    providers: *id001\nsignature:\n  inputs: '[{}]'\n",
            columns.join(", ")
        );
        assert!(wide.len() > 250_000);
        check_mlmodel_shape(&wide).unwrap();
        let parsed: serde_yaml::Value = parse_mlmodel(&wide).unwrap();
        assert_eq!(parsed["flavors"]["python_function"]["providers"][0], "CPUExecutionProvider");
    }

    /// Each way to make libyaml work hard, at sizes that took it seconds, is refused in
    /// milliseconds with a message naming the bound.
    #[test]
    fn deep_wide_and_aliased_mlmodels_are_refused_quickly() {
        let n = 60_000;
        let laughs = {
            // 9 aliases of 9 aliases of ... of 10 values: 10 * 9^6 = 5 million values in 500 bytes.
            let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
            for i in 1..=6 {
                s += &format!("a{i}: &a{i} [{}]\n", vec![format!("*a{}", i - 1); 9].join(", "));
            }
            s
        };
        let cases: Vec<(&str, String, &str)> = vec![
            ("flow sequences", format!("a: {}", "[".repeat(n)), "levels deep"),
            ("closed flow sequences", format!("a: {}{}", "[".repeat(n), "]".repeat(n)), "levels deep"),
            ("flow mappings", format!("a: {}", "{a: ".repeat(n)), "levels deep"),
            ("quoted closers between", format!("a: {}", "[ ']', ".repeat(n / 4)), "levels deep"),
            ("block sequences", "- ".repeat(n), "levels deep"),
            ("block mappings", (0..200).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect(), "levels deep"),
            ("complex keys", "? ".repeat(n), "levels deep"),
            ("billion laughs", laughs, "aliases are expanded"),
            ("many values", "- x\n".repeat(150_000), "values"),
            ("two documents", "a: 1\n---\nb: 2\n".to_string(), "more than one YAML document"),
        ];
        let mut worst = (std::time::Duration::ZERO, "");
        for (label, text, want) in &cases {
            let started = std::time::Instant::now();
            let e = parse_mlmodel::<serde_yaml::Value>(text).unwrap_err();
            let took = started.elapsed();
            assert!(matches!(e, MlmodelError::Bounds(_)), "{label}: {e:?}");
            let e = e.to_string();
            assert!(e.contains(want), "{label}: {e}");
            if took > worst.0 {
                worst = (took, label);
            }
        }
        eprintln!("worst MLmodel refusal: {:?} ({})", worst.0, worst.1);
        assert!(worst.0 < std::time::Duration::from_secs(2), "{} took {:?}", worst.1, worst.0);

        // The costliest documents still accepted: flow nesting at the depth bound up to the node
        // bound, and a megabyte of one long string. Both parse in bounded time.
        let deep_line = format!("- {}x{}\n", "[".repeat(MAX_MLMODEL_DEPTH - 1), "]".repeat(MAX_MLMODEL_DEPTH - 1));
        let deep = deep_line.repeat((MAX_MLMODEL_NODES as usize - 1) / MAX_MLMODEL_DEPTH);
        let long = format!("a: '{}'\n", "x".repeat(MAX_MLMODEL_BYTES as usize - 10));
        for (label, text) in [("deepest accepted", deep), ("longest accepted", long)] {
            let started = std::time::Instant::now();
            parse_mlmodel::<serde_yaml::Value>(&text).unwrap_or_else(|e| panic!("{label}: {e}"));
            let took = started.elapsed();
            eprintln!("{label} MLmodel ({} bytes) parsed in {took:?}", text.len());
            assert!(took < std::time::Duration::from_secs(5), "{label} took {took:?}");
        }
    }

    #[test]
    fn oversized_mlmodel_files_are_refused_before_reading_them_whole() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.onnx"), b"x").unwrap();
        let big =
            format!("flavors:\n  onnx:\n    data: model.onnx\npadding: '{}'\n", "x".repeat(MAX_MLMODEL_BYTES as usize));
        std::fs::write(dir.path().join("MLmodel"), big).unwrap();
        let e = ModelFiles::locate(dir.path()).unwrap_err().to_string();
        assert!(e.contains("larger than 1048576 bytes"), "{e}");
    }
}
