//! End to end: the `models` and `predict` commands against a temporary embedded registry.

mod common;

use common::{close, repo, Registry};
use serde_json::Value;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn registry_dirs(reg: &Registry) -> Vec<String> {
    let dir = reg.data_dir().join("artifacts/registry");
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => vec![],
    }
}

#[test]
fn register_list_show_transition_alias_rename_tag_describe() {
    let reg = Registry::new();
    let v1 = reg.register("iris-v1", "iris", &["--stage", "production", "--alias", "champion", "--tag", "team=ml"]);
    assert_eq!(
        (v1["version"].as_str(), v1["current_stage"].as_str(), v1["status"].as_str()),
        (Some("1"), Some("Production"), Some("READY"))
    );
    assert_eq!(v1["aliases"][0], "champion");
    assert_eq!(v1["tags"][0]["key"], "team");
    assert!(v1["source"].as_str().unwrap().starts_with("mlflow-artifacts:/registry/"));
    let v2 = reg.register("iris-v2", "iris", &[]);
    assert_eq!(v2["version"], "2");

    let models: Value = serde_json::from_str(&reg.ok(&["models", "list", "--json"])).unwrap();
    assert_eq!(models[0]["name"], "iris");
    assert_eq!(models[0]["aliases"][0]["alias"], "champion");

    let t: Value = serde_json::from_str(&reg.ok(&[
        "models",
        "transition",
        "iris",
        "2",
        "Production",
        "--archive-existing",
        "--json",
    ]))
    .unwrap();
    assert_eq!(t["current_stage"], "Production");
    let versions: Value = serde_json::from_str(&reg.ok(&["models", "versions", "iris", "--json"])).unwrap();
    assert_eq!(versions[1]["current_stage"], "Archived", "v1 was archived: {versions}");

    let bad = reg.run(&["models", "transition", "iris", "1", "Prod"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("Value must be one of None, Staging, Production, Archived"), "{}", stderr(&bad));

    reg.ok(&["models", "alias", "set", "iris", "challenger", "2"]);
    reg.ok(&["models", "describe", "iris", "# Iris\nclassifier"]);
    reg.ok(&["models", "describe", "iris", "tree model", "--version", "2"]);
    reg.ok(&["models", "tag", "iris", "owner=alice"]);
    reg.ok(&["models", "rename", "iris", "flowers"]);
    let shown: Value = serde_json::from_str(&reg.ok(&["models", "show", "flowers", "--json"])).unwrap();
    let m = &shown["registered_model"];
    assert_eq!(m["description"], "# Iris\nclassifier");
    assert_eq!(m["tags"][0]["key"], "owner");
    assert_eq!(m["aliases"].as_array().unwrap().len(), 2);
    assert_eq!(shown["model_versions"][0]["description"], "tree model");
    reg.ok(&["models", "alias", "delete", "flowers", "challenger"]);
    let text = reg.ok(&["models", "show", "flowers"]);
    assert!(text.contains("@champion") && !text.contains("@challenger"), "{text}");
    let missing = reg.run(&["models", "show", "iris"]);
    assert!(stderr(&missing).contains("Registered Model with name=iris not found"));
}

#[test]
fn a_model_that_does_not_load_leaves_no_version_and_no_files() {
    let reg = Registry::new();
    reg.register("iris-v1", "iris", &[]);
    let before = registry_dirs(&reg);

    let broken = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("models/iris-v1/MLmodel"), broken.path().join("MLmodel")).unwrap();
    std::fs::write(broken.path().join("model.onnx"), b"this is not an onnx model").unwrap();
    let out =
        reg.run(&["models", "register", broken.path().to_str().unwrap(), "--name", "iris", "--stage", "Production"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("failed its test load") && err.contains("no version was created"), "{err}");
    let versions: Value = serde_json::from_str(&reg.ok(&["models", "versions", "iris", "--json"])).unwrap();
    assert_eq!(versions.as_array().unwrap().len(), 1, "{versions}");
    assert_eq!(registry_dirs(&reg), before, "the copied files were removed");

    // A new name: the registered model is not created either.
    let out = reg.run(&["models", "register", broken.path().to_str().unwrap(), "--name", "other"]);
    assert!(!out.status.success());
    assert!(!reg.run(&["models", "show", "other"]).status.success());

    // An MLflow model without an onnx flavor is refused with the flavors it has and the fix.
    std::fs::write(broken.path().join("MLmodel"), "flavors:\n  sklearn:\n    pickled_model: model.pkl\n").unwrap();
    let out = reg.run(&["models", "register", broken.path().to_str().unwrap(), "--name", "iris"]);
    let err = stderr(&out);
    assert!(err.contains("not an ONNX model (MLmodel flavors: sklearn)"), "{err}");
    assert!(err.contains("skl2onnx") && err.contains("mlflow.onnx.log_model"), "{err}");

    // The next good registration gets the next number.
    assert_eq!(reg.register("iris-v2", "iris", &[])["version"], "2");
}

#[test]
fn version_numbers_are_never_reused_after_delete() {
    let reg = Registry::new();
    reg.register("iris-v1", "iris", &[]);
    reg.register("iris-v2", "iris", &[]);
    assert_eq!(registry_dirs(&reg).len(), 2);
    // Without --yes and no answer on stdin, nothing is deleted.
    let out = reg.run(&["models", "delete", "iris", "--version", "2"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not deleted"));
    reg.ok(&["models", "delete", "iris", "--version", "2", "--yes"]);
    assert_eq!(registry_dirs(&reg).len(), 1, "the deleted version's files are gone");
    assert_eq!(reg.register("iris-v2", "iris", &[])["version"], "3");
    reg.ok(&["models", "delete", "iris", "--yes"]);
    assert!(registry_dirs(&reg).is_empty());
    assert!(!reg.run(&["models", "show", "iris"]).status.success());
}

#[test]
fn predict_scores_once_like_mlflow_models_predict() {
    let reg = Registry::new();
    reg.register("iris-v1", "iris", &["--alias", "champion"]);
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("models/reference/iris-v1/csv_4rows.json")).unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("rows.csv");
    std::fs::write(&csv, reference["csv"].as_str().unwrap()).unwrap();
    let out: Value =
        serde_json::from_str(&reg.ok(&["predict", "-m", "models:/iris@champion", "--input", csv.to_str().unwrap()]))
            .unwrap();
    let preds = out["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 4);
    for (i, p) in preds.iter().enumerate() {
        close(&p["label"], &reference["raw_outputs"]["label"][i], 0.0, "label").unwrap();
        close(&p["probabilities"], &reference["raw_outputs"]["probabilities"][i], 1e-5, "probabilities").unwrap();
    }
    let bad = reg.run(&["predict", "-m", "models:/iris/Staging", "--input", csv.to_str().unwrap()]);
    assert!(
        stderr(&bad).contains("No versions of model with name 'iris' and stage 'Staging' found"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn a_missing_onnx_runtime_library_is_a_clear_error_not_a_panic() {
    let reg = Registry::new();
    let out = reg
        .cmd()
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .args(["serve", "-m", "models:/iris/1", "--port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("scripts/fetch-onnxruntime") && err.contains("/nonexistent/libonnxruntime.so"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let out = reg
        .cmd()
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .args(["models", "register", repo().join("models/iris-v1").to_str().unwrap(), "--name", "iris"])
        .output()
        .unwrap();
    assert!(!out.status.success() && stderr(&out).contains("scripts/fetch-onnxruntime"), "{}", stderr(&out));
    let bad_uri = reg.run(&["serve", "-m", "models:/iris"]);
    assert!(stderr(&bad_uri).contains("Accepted forms"), "{}", stderr(&bad_uri));
}
