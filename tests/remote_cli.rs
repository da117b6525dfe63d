//! End to end: the `models` and `predict` commands against a remote registry — the real
//! `regserve server` on 127.0.0.1:0 — chosen by `--registry-uri` or MLflow's environment
//! variables. Results are checked through the server's REST API and `models show --json`;
//! the CLI's own `--data-dir` must stay without a registry of its own.

mod common;

use std::process::{Command, Output};

use common::{close, repo, Registry, Server};
use serde_json::{json, Value};

const API: &str = "/api/2.0/mlflow";
const ARTIFACTS: &str = "/api/2.0/mlflow-artifacts/artifacts";
const URI_VARS: [&str; 2] = ["MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"];

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `regserve server` with its own data directory, and a way to ask it things over REST.
struct Remote {
    _data: Registry,
    server: Server,
    rt: tokio::runtime::Runtime,
}

impl Remote {
    fn start() -> Remote {
        let data = Registry::new();
        let server = data.spawn(&["server"]);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Remote { _data: data, server, rt }
    }

    fn url(&self) -> &str {
        &self.server.base
    }

    /// One request; the status and the JSON answer (`null` for an empty body).
    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.rt.block_on(async {
            let mut req = reqwest::Client::new().request(method, self.server.url(path));
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.expect("request");
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(json!(text)) })
        })
    }

    fn get(&self, path_and_query: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, &format!("{API}/{path_and_query}"), None)
    }

    fn version(&self, name: &str, version: u64) -> Value {
        let (status, v) = self.get(&format!("model-versions/get?name={name}&version={version}"));
        assert_eq!(status, 200, "{v}");
        v["model_version"].clone()
    }

    fn model(&self, name: &str) -> (u16, Value) {
        self.get(&format!("registered-models/get?name={name}"))
    }

    /// The names in the artifact proxy's listing of a version's files.
    fn files_of(&self, name: &str, version: u64) -> Vec<String> {
        let (_, uri) = self.get(&format!("model-versions/get-download-uri?name={name}&version={version}"));
        let path = uri["artifact_uri"].as_str().unwrap().strip_prefix("mlflow-artifacts:/").unwrap().to_string();
        let (status, listing) = self.call(reqwest::Method::GET, &format!("{ARTIFACTS}?path={path}"), None);
        assert_eq!(status, 200);
        listing["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap().to_string()).collect()
    }
}

/// The CLI with its own (empty) data directory, pointed at a registry by flag or environment.
struct Cli {
    data: Registry,
    registry_uri: Option<String>,
}

impl Cli {
    fn flag(remote: &Remote) -> Cli {
        Cli { data: Registry::new(), registry_uri: Some(remote.url().to_string()) }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.data.cmd();
        for var in URI_VARS {
            c.env_remove(var);
        }
        c.args(args);
        // After the subcommand's own arguments: the flag is global.
        if let Some(uri) = &self.registry_uri {
            c.args(["--registry-uri", uri]);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run regserve")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "regserve {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        serde_json::from_str(&self.ok(&args)).expect("--json prints JSON")
    }

    fn register(&self, path: &str, name: &str, extra: &[&str]) -> Value {
        let path = repo().join("models").join(path);
        let mut args = vec!["models", "register", path.to_str().unwrap(), "--name", name];
        args.extend_from_slice(extra);
        self.json(&args)
    }

    /// Nothing of an embedded registry was created in the CLI's data directory.
    fn assert_no_local_registry(&self) {
        assert!(!self.data.data_dir().join("registry.db").exists(), "the CLI opened its own store");
    }
}

fn reference(model: &str) -> Value {
    let path = repo().join(format!("models/reference/{model}/csv_4rows.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn assert_predicts_like(out: &str, reference: &Value) {
    let out: Value = serde_json::from_str(out).unwrap();
    let preds = out["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 4, "{out}");
    for (i, p) in preds.iter().enumerate() {
        close(&p["label"], &reference["raw_outputs"]["label"][i], 0.0, "label").unwrap();
        close(&p["probabilities"], &reference["raw_outputs"]["probabilities"][i], 1e-5, "probabilities").unwrap();
    }
}

#[test]
fn every_models_command_works_against_regserve_server() {
    let remote = Remote::start();
    let cli = Cli::flag(&remote);

    // register: uploaded as a logged model, created READY, then stage, alias, tags, description.
    let v1 = cli.register(
        "iris-v1",
        "iris",
        &["--stage", "production", "--alias", "champion", "--tag", "team=ml", "--description", "first"],
    );
    assert_eq!(
        (v1["version"].as_str(), v1["current_stage"].as_str(), v1["status"].as_str()),
        (Some("1"), Some("Production"), Some("READY")),
        "{v1}"
    );
    assert_eq!(v1["aliases"], json!(["champion"]));
    let source = v1["source"].as_str().unwrap();
    assert!(source.starts_with("models:/m-"), "{source}");
    let rest_v1 = remote.version("iris", 1);
    assert_eq!(rest_v1["source"], source);
    assert_eq!(rest_v1["status"], "READY");
    assert_eq!(rest_v1["current_stage"], "Production");
    assert_eq!(rest_v1["description"], "first");
    assert_eq!(rest_v1["tags"], json!([{"key": "team", "value": "ml"}]));
    let (_, logged) = remote.get(&format!("logged-models/{}", source.trim_start_matches("models:/")));
    assert_eq!(logged["model"]["info"]["status"], "LOGGED_MODEL_READY", "{logged}");
    let mut want: Vec<String> = std::fs::read_dir(repo().join("models/iris-v1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    want.sort();
    assert_eq!(remote.files_of("iris", 1), want, "every file of the model directory was uploaded");
    let (_, m) = remote.model("iris");
    assert_eq!(m["registered_model"]["description"], "first");
    assert_eq!(m["registered_model"]["aliases"], json!([{"alias": "champion", "version": "1"}]));

    // A bare .onnx file goes up as an MLflow model directory with a generated MLmodel.
    let v2 = cli.register("iris-v2/model.onnx", "iris", &[]);
    assert_eq!((v2["version"].as_str(), v2["status"].as_str()), (Some("2"), Some("READY")), "{v2}");
    assert_eq!(remote.files_of("iris", 2), ["MLmodel", "model.onnx"]);

    let models = cli.json(&["models", "list"]);
    assert_eq!(models.as_array().unwrap().len(), 1, "{models}");
    assert_eq!(models[0]["name"], "iris");
    let versions = cli.json(&["models", "versions", "iris"]);
    let numbers: Vec<&str> = versions.as_array().unwrap().iter().map(|v| v["version"].as_str().unwrap()).collect();
    assert_eq!(numbers, ["2", "1"], "newest first");
    assert_eq!(versions[1]["aliases"], json!(["champion"]), "aliases filled in from the model: {versions}");

    // transition, with --archive-existing.
    let t = cli.json(&["models", "transition", "iris", "2", "Production", "--archive-existing"]);
    assert_eq!(t["current_stage"], "Production");
    assert_eq!(remote.version("iris", 1)["current_stage"], "Archived");
    let bad = cli.run(&["models", "transition", "iris", "1", "Prod"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("Value must be one of None, Staging, Production, Archived"), "{}", stderr(&bad));

    // alias set / delete.
    cli.ok(&["models", "alias", "set", "iris", "challenger", "2"]);
    let (status, by_alias) = remote.get("registered-models/alias?name=iris&alias=challenger");
    assert_eq!((status, by_alias["model_version"]["version"].as_str()), (200, Some("2")), "{by_alias}");
    cli.ok(&["models", "alias", "delete", "iris", "challenger"]);
    assert_eq!(remote.get("registered-models/alias?name=iris&alias=challenger").0, 400);
    let again = cli.run(&["models", "alias", "delete", "iris", "challenger"]);
    assert!(!again.status.success() && stderr(&again).contains("challenger"), "{}", stderr(&again));

    // describe a model and a version.
    cli.ok(&["models", "describe", "iris", "# Iris\nclassifier"]);
    cli.ok(&["models", "describe", "iris", "bare file", "--version", "2"]);
    assert_eq!(remote.model("iris").1["registered_model"]["description"], "# Iris\nclassifier");
    assert_eq!(remote.version("iris", 2)["description"], "bare file");

    // tag: set and delete, on the model and on a version.
    cli.ok(&["models", "tag", "iris", "owner=alice"]);
    cli.ok(&["models", "tag", "iris", "owner=bob"]);
    cli.ok(&["models", "tag", "iris", "reviewed=yes", "--version", "2"]);
    assert_eq!(remote.model("iris").1["registered_model"]["tags"], json!([{"key": "owner", "value": "bob"}]));
    assert_eq!(remote.version("iris", 2)["tags"], json!([{"key": "reviewed", "value": "yes"}]));
    cli.ok(&["models", "tag", "iris", "--delete", "owner"]);
    cli.ok(&["models", "tag", "iris", "--delete", "reviewed", "--version", "2"]);
    assert!(remote.model("iris").1["registered_model"].get("tags").is_none());
    assert!(remote.version("iris", 2).get("tags").is_none());

    // rename.
    cli.ok(&["models", "rename", "iris", "flowers"]);
    assert_eq!(remote.model("iris").0, 404);
    let shown = cli.json(&["models", "show", "flowers"]);
    assert_eq!(shown["registered_model"]["name"], "flowers");
    assert_eq!(shown["registered_model"]["description"], "# Iris\nclassifier");
    let shown_versions = shown["model_versions"].as_array().unwrap();
    assert_eq!(shown_versions.len(), 2, "{shown}");
    assert_eq!(shown_versions[0]["current_stage"], "Production");
    assert_eq!(shown_versions[1]["aliases"], json!(["champion"]));
    assert!(cli.ok(&["models", "show", "flowers"]).contains("@champion → v1"));
    let missing = cli.run(&["models", "show", "iris"]);
    assert!(stderr(&missing).contains("Registered Model with name=iris not found"), "{}", stderr(&missing));

    // delete: asks first; a version, then the model.
    let out = cli.run(&["models", "delete", "flowers", "--version", "1"]);
    assert!(!out.status.success() && stderr(&out).contains("not deleted"), "{}", stderr(&out));
    assert_eq!(remote.get("model-versions/get?name=flowers&version=1").0, 200);
    cli.ok(&["models", "delete", "flowers", "--version", "1", "--yes"]);
    assert_eq!(remote.get("model-versions/get?name=flowers&version=1").0, 404);
    cli.ok(&["models", "delete", "flowers", "--yes"]);
    assert_eq!(remote.model("flowers").0, 404);
    let gone = cli.run(&["models", "delete", "flowers", "--yes"]);
    assert!(stderr(&gone).contains("Registered Model with name=flowers not found"), "{}", stderr(&gone));
    assert_eq!(cli.json(&["models", "list"]), json!([]));

    cli.assert_no_local_registry();
}

#[test]
fn predict_downloads_from_the_remote_registry_and_scores() {
    let remote = Remote::start();
    let cli = Cli::flag(&remote);
    cli.register("iris-v1", "iris", &["--alias", "champion"]);
    cli.register("iris-v2", "iris", &["--stage", "Production"]);

    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("rows.csv");
    let (v1, v2) = (reference("iris-v1"), reference("iris-v2"));
    assert_eq!(v1["csv"], v2["csv"], "both references score the same rows");
    std::fs::write(&csv, v1["csv"].as_str().unwrap()).unwrap();
    let csv = csv.to_str().unwrap();

    assert_predicts_like(&cli.ok(&["predict", "-m", "models:/iris@champion", "--input", csv]), &v1);
    assert_predicts_like(&cli.ok(&["predict", "-m", "models:/iris/Production", "--input", csv]), &v2);
    assert_predicts_like(&cli.ok(&["predict", "-m", "models:/iris/latest", "--input", csv]), &v2);
    // The second time comes from the download cache.
    let again = cli.run(&["predict", "-m", "models:/iris/1", "--input", csv]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_predicts_like(&String::from_utf8_lossy(&again.stdout), &v1);
    assert!(cli.data.data_dir().join("cache").is_dir());

    let out = cli.run(&["predict", "-m", "models:/iris/Staging", "--input", csv]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("No versions of model with name 'iris' and stage 'Staging' found"),
        "{}",
        stderr(&out)
    );
    cli.assert_no_local_registry();
}

#[test]
fn a_broken_model_is_refused_before_anything_is_created() {
    let remote = Remote::start();
    let cli = Cli::flag(&remote);
    let broken = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("models/iris-v1/MLmodel"), broken.path().join("MLmodel")).unwrap();
    std::fs::write(broken.path().join("model.onnx"), b"this is not an onnx model").unwrap();

    let out =
        cli.run(&["models", "register", broken.path().to_str().unwrap(), "--name", "iris", "--stage", "Production"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("failed its test load") && err.contains("no version was created"), "{err}");

    assert_eq!(remote.model("iris").0, 404, "no registered model");
    let (status, logged) = remote.call(
        reqwest::Method::POST,
        &format!("{API}/logged-models/search"),
        Some(json!({"experiment_ids": ["0"]})),
    );
    assert_eq!(status, 200);
    assert!(logged.get("models").is_none(), "no logged model: {logged}");
    let (_, listing) = remote.call(reqwest::Method::GET, &format!("{ARTIFACTS}?path=0"), None);
    assert_eq!(listing, json!({}), "no files uploaded");

    // Bad names and aliases are refused before anything is sent, too.
    let iris = repo().join("models/iris-v1");
    let out = cli.run(&["models", "register", iris.to_str().unwrap(), "--name", "a/b"]);
    assert!(stderr(&out).contains("may not contain"), "{}", stderr(&out));
    let out = cli.run(&["models", "register", iris.to_str().unwrap(), "--name", "iris", "--alias", "v3"]);
    assert!(stderr(&out).contains("reserved alias"), "{}", stderr(&out));
    assert_eq!(remote.model("iris").0, 404);
}

#[test]
fn an_unreachable_or_unsupported_registry_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let cli = Cli { data: Registry::new(), registry_uri: Some(url.clone()) };
    let out = cli.cmd(&["models", "list"]).env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0").output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&url) && err.contains("Connection refused"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let out = cli
        .cmd(&["models", "register", repo().join("models/iris-v1").to_str().unwrap(), "--name", "iris"])
        .env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains("registering") && err.contains("Connection refused"), "{err}");
    cli.assert_no_local_registry();

    let cli = Cli { data: Registry::new(), registry_uri: Some("ftp://registry.example".into()) };
    let err = stderr(&cli.run(&["models", "list"]));
    assert!(err.contains("unsupported registry URI") && err.contains("--registry-uri"), "{err}");

    // `server` serves its --data-dir store; the flag would be silently ignored there.
    let err = stderr(&cli.run(&["server", "--port", "0"]));
    assert!(err.contains("does not apply to `regserve server`"), "{err}");
}

#[test]
fn mlflow_environment_variables_choose_the_registry_when_no_flag_is_given() {
    let remote = Remote::start();
    let cli = Cli { data: Registry::new(), registry_uri: None };
    let iris = repo().join("models/iris-v1");
    let iris = iris.to_str().unwrap();

    // MLFLOW_TRACKING_URI alone.
    let out = cli
        .cmd(&["models", "register", iris, "--name", "iris", "--json"])
        .env("MLFLOW_TRACKING_URI", remote.url())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(remote.version("iris", 1)["status"], "READY");
    cli.assert_no_local_registry();

    // MLFLOW_REGISTRY_URI wins over MLFLOW_TRACKING_URI.
    let out = cli
        .cmd(&["models", "list", "--json"])
        .env("MLFLOW_REGISTRY_URI", remote.url())
        .env("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let models: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(models[0]["name"], "iris");

    // The flag wins over both; sqlite:/// names an embedded store at that path.
    let db = cli.data.data_dir().join("elsewhere/registry.db");
    let sqlite = format!("sqlite:///{}", db.display());
    let out = cli
        .cmd(&["models", "list", "--json", "--registry-uri", &sqlite])
        .env("MLFLOW_REGISTRY_URI", remote.url())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), json!([]));
    assert!(db.exists(), "the embedded store was opened at the sqlite:/// path");
}

#[test]
fn large_files_are_streamed_to_the_artifact_proxy() {
    use regserve::mlflow::{HttpSettings, ProgressFn, RestRegistry, Upload};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let remote = Remote::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob.bin");
    let data: Vec<u8> = (0..(9u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(&path, &data).unwrap();

    let registry = RestRegistry::new(remote.url(), HttpSettings::default()).unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let updates = Arc::new(AtomicU64::new(0));
    let (s, u) = (seen.clone(), updates.clone());
    let progress: ProgressFn = Arc::new(move |sent| {
        s.store(sent, Ordering::Relaxed);
        u.fetch_add(1, Ordering::Relaxed);
    });
    let url = reqwest::Url::parse(&remote.server.url(&format!("{ARTIFACTS}/7/big/blob.bin"))).unwrap();
    remote.rt.block_on(registry.upload_artifact(&url, &Upload::File(path.clone()), &progress)).unwrap();
    assert_eq!(seen.load(Ordering::Relaxed), data.len() as u64);
    assert!(updates.load(Ordering::Relaxed) > 10, "sent in chunks, not as one buffer");

    let back = remote.rt.block_on(async { reqwest::get(url.clone()).await.unwrap().bytes().await.unwrap() });
    assert!(back.len() == data.len() && back[..] == data[..], "the proxy holds exactly the file");

    // A small upload from memory, and a refused one mapped to MLflow's error.
    let small = reqwest::Url::parse(&remote.server.url(&format!("{ARTIFACTS}/7/big/note.txt"))).unwrap();
    remote.rt.block_on(registry.upload_artifact(&small, &Upload::Bytes("hi".into()), &progress)).unwrap();
    let refused = reqwest::Url::parse(&remote.server.url(&format!("{ARTIFACTS}/registry/x.bin"))).unwrap();
    let e = remote.rt.block_on(registry.upload_artifact(&refused, &Upload::Bytes("x".into()), &progress)).unwrap_err();
    assert!(matches!(e, regserve::registry::RegistryError::InvalidParameter(_)), "{e}");
}
