//! Inputs the fuzz targets in `fuzz/` found crashing or breaking an invariant, each fed exactly
//! as found (see fuzz/README.md). Every one of them must now be a clean error, or a correct
//! result.

use regserve::runtime::convert::prepare;
use regserve::runtime::payload::parse_json;
use regserve::runtime::schema::{ColSpec, DType, ModelSchema, Signature, TensorInfo, ValueKind};
use regserve::runtime::ScoringErrorKind;

fn info(name: &str, dtype: DType, shape: &[i64]) -> TensorInfo {
    TensorInfo { name: name.into(), kind: ValueKind::Tensor(dtype), shape: shape.to_vec() }
}

const IRIS: [&str; 4] = ["sepal_length", "sepal_width", "petal_length", "petal_width"];

/// The iris model with one `[N, 1]` input per column, as `models/iris-columns`.
fn per_column_iris() -> ModelSchema {
    let sig = Signature::Columns(
        IRIS.iter().map(|n| ColSpec { name: Some(n.to_string()), ty: "float".into(), required: true }).collect(),
    );
    ModelSchema::new(IRIS.iter().map(|n| info(n, DType::F32, &[-1, 1])).collect(), vec![], Some(sig)).unwrap()
}

/// payload_json crash-df65e319: positional rows of different lengths for a model with one
/// input per column indexed past the end of the short row (index out of bounds in
/// `convert::frame_inputs`).
#[test]
fn ragged_positional_rows_for_a_per_column_model() {
    let body = br#"{"inputs":[[5.7,4.4,1.4,1.4],[6.44,1.4],[6.4,3.2,5.3,2.3]]}"#;
    let payload = parse_json(body).unwrap().payload;
    let e = prepare(&per_column_iris(), &payload).unwrap_err();
    assert_eq!(e.kind, ScoringErrorKind::BadRequest, "{e}");
    assert!(e.message.contains("row 1 has 2 values but row 0 has 4"), "{e}");
    // Rectangular rows still work.
    let ok = parse_json(br#"{"inputs":[[5.7,4.4,1.4,1.4],[6.4,3.2,5.3,2.3]]}"#).unwrap().payload;
    assert_eq!(prepare(&per_column_iris(), &ok).unwrap().rows, 2);
}

/// properties `artifact_paths_stay_inside_the_root`, and artifact_path crash-dcc63425
/// (`dangling/`): a dangling symlink leading out of the root was accepted, because
/// `Path::exists` follows links and the check then only resolved the root itself; with a
/// trailing slash even `symlink_metadata` follows the link.
#[test]
fn dangling_links_out_of_the_artifact_root_are_refused() {
    use regserve::artifact::{ArtifactRoot, FetchError};
    let dir = tempfile::tempdir().unwrap();
    let root = ArtifactRoot::new(dir.path().join("root")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside/missing"), root.root().join("dangling")).unwrap();
    for rel in ["dangling", "dangling/", "dangling/x", "./dangling/x/y", "dangling%2F"] {
        assert!(matches!(root.path_of(rel), Err(FetchError::PathEscapes(_))), "{rel}");
    }
    // Paths that do not exist yet, and links that stay inside, are still fine.
    std::fs::create_dir_all(root.root().join("a")).unwrap();
    std::os::unix::fs::symlink(root.root().join("a"), root.root().join("in")).unwrap();
    for rel in ["new/file.onnx", "in/x", "a/b/c"] {
        assert!(root.path_of(rel).unwrap().starts_with(root.root()), "{rel}");
    }
}
