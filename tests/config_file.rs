//! End to end: the configuration file with the real binary — every example under `config/`
//! loads and shows its own values in `--print-config`, a file with an unknown key fails naming it
//! and the file, and `serve --config` serves on the file's port, the file's model, auth and
//! limits, with the environment overriding the port; `server --config` takes the top level and
//! its own table of a file shared with `serve`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{bin, close, repo, Registry, Server};
use serde_json::{json, Value};

/// Command-line arguments an example needs beside the file, as its deployment passes them.
/// `serve-kserve.toml` leaves the model to KServe's command line, as deploy/kserve's runtime
/// spells it.
fn deployment_args(example: &str) -> &'static [&'static str] {
    match example {
        "serve-kserve.toml" => &["--model_name=fraud", "--model_dir=/mnt/models"],
        _ => &[],
    }
}

fn subcommand_of(example: &str) -> &'static str {
    if example.starts_with("server") {
        "server"
    } else {
        "serve"
    }
}

/// `regserve <args>` with an empty environment: nothing but the file and the flags counts.
fn run(args: &[&str]) -> Output {
    Command::new(bin()).args(args).env_clear().stdin(Stdio::null()).output().expect("run regserve")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("config"))
        .expect("config/ holds the examples")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_loads_and_print_config_shows_its_values() {
    let files = examples();
    let names: Vec<String> = files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for expected in ["serve.toml", "serve-kserve.toml", "server.toml"] {
        assert!(names.iter().any(|n| n == expected), "config/{expected} is missing: {names:?}");
    }
    for (path, name) in files.iter().zip(&names) {
        let sub = subcommand_of(name);
        let file = path.to_str().unwrap();
        let mut args = vec![sub, "--config", file, "--print-config"];
        args.extend_from_slice(deployment_args(name));
        let out = run(&args);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        let printed = text(&out.stdout);
        let effective: toml::Table = toml::from_str(&printed).unwrap_or_else(|e| panic!("{name}: {e}\n{printed}"));
        let example: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut keys = 0;
        for (key, value) in &example {
            if let toml::Value::Table(_) = value {
                continue; // the other subcommand's table
            }
            keys += 1;
            let line = printed
                .lines()
                .find(|l| l.starts_with(&format!("{key} = ")))
                .unwrap_or_else(|| panic!("{name}: {key} not printed:\n{printed}"));
            assert!(line.ends_with(&format!("# file {file}")), "{name}: {line}");
            let shown = &effective[key.as_str()];
            if !shown.to_string().contains("***") {
                assert_eq!(shown, value, "{name}: {key}");
            }
        }
        assert!(keys >= 8, "{name} sets only {keys} keys");
        // The printed configuration is itself a configuration file giving the same values.
        let dir = tempfile::tempdir().unwrap();
        let again = dir.path().join(name);
        std::fs::write(&again, &printed).unwrap();
        let mut args = vec![sub, "--config", again.to_str().unwrap(), "--print-config"];
        args.extend_from_slice(deployment_args(name));
        let out = run(&args);
        assert!(out.status.success(), "{name} printed: {}", text(&out.stderr));
        let reloaded: toml::Table = toml::from_str(&text(&out.stdout)).unwrap();
        assert_eq!(reloaded, effective, "{name}: --print-config of its own output");
    }
}

#[test]
fn a_file_with_an_unknown_key_fails_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("serve.toml");
    let mut body = std::fs::read_to_string(repo().join("config/serve.toml")).unwrap();
    let line = body.lines().count() + 1;
    body.push_str("max_batch = 3\nsessions = \"eighty\"\n");
    std::fs::write(&path, body).unwrap();
    let out = run(&["serve", "--config", path.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("configuration file {} (--config / REGSERVE_CONFIG): 2 problems", path.display())),
        "{err}"
    );
    assert!(err.contains(&format!("{}:{line}: max_batch: unknown key", path.display())), "{err}");
    assert!(err.contains("did you mean 'max_batch_size'?"), "{err}");
    assert!(err.contains(&format!("{}:{}: sessions: invalid value 'eighty'", path.display(), line + 1)), "{err}");
    assert!(out.stdout.is_empty(), "nothing started: {}", text(&out.stdout));
    // The same file through the variable.
    let out = Command::new(bin())
        .arg("serve")
        .env_clear()
        .env("REGSERVE_CONFIG", &path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("max_batch: unknown key"), "{}", text(&out.stderr));
    // A file that is not there.
    let out = run(&["server", "--config", "/nonexistent/server.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/server.toml: cannot open it"), "{}", text(&out.stderr));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `regserve serve` with only the environment given, logs at info (the bound address).
fn serve_cmd(envs: &[(&str, &Path)], ports: &[(&str, u16)]) -> Command {
    let mut c = Command::new(bin());
    c.arg("serve").env_clear().env("RUST_LOG", "info").stdin(Stdio::null());
    if let Ok(ort) = std::env::var("ORT_DYLIB_PATH") {
        c.env("ORT_DYLIB_PATH", ort);
    }
    for (k, v) in envs {
        c.env(k, v);
    }
    for (k, v) in ports {
        c.env(k, v.to_string());
    }
    c
}

/// The iris reference case of three rows, and the answer onnxruntime gave for it.
fn iris_case() -> (Value, Value) {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("models/reference/iris-v1/records_3rows.json")).unwrap(),
    )
    .unwrap();
    let raw = reference["raw_outputs"].as_object().unwrap();
    let rows = raw.values().next().unwrap().as_array().unwrap().len();
    let records: Vec<Value> =
        (0..rows).map(|i| Value::Object(raw.iter().map(|(k, v)| (k.clone(), v[i].clone())).collect())).collect();
    (reference["request"].clone(), json!({ "predictions": records }))
}

async fn check_scores(server: &Server, token: &str) {
    server.wait_ready("/ping", Duration::from_secs(60)).await;
    let client = reqwest::Client::new();
    let (request, want) = iris_case();
    let url = server.url("/invocations");
    let r = client.post(&url).json(&request).send().await.unwrap();
    assert_eq!(r.status(), 401, "auth_token_file from the file is in force");
    let r = client.post(&url).bearer_auth(token).json(&request).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-model-version"], "1");
    let got: Value = r.json().await.unwrap();
    close(&got, &want, 1e-5, "records_3rows").unwrap_or_else(|e| panic!("{e}\n got: {got}\nwant: {want}"));
    let big = format!("{{\"dataframe_records\": [{{\"pad\": \"{}\"}}]}}", "x".repeat(8 << 10));
    let r =
        client.post(&url).bearer_auth(token).header("Content-Type", "application/json").body(big).send().await.unwrap();
    assert_eq!(r.status(), 413, "max_body_size from the file is in force");
}

#[tokio::test]
async fn serve_runs_on_the_files_port_and_model_and_the_environment_overrides_it() {
    let reg = Registry::new();
    reg.register("iris-v1", "iris", &["--alias", "champion"]);
    let dir = tempfile::tempdir().unwrap();
    let token = "config-file-test-token";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).unwrap();
    let port = free_port();
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "model = [\"models:/iris@champion\"]\ndata_dir = {:?}\nhost = \"127.0.0.1\"\nport = {port}\n\
             max_body_size = \"4KiB\"\nmax_batch_size = 8\nauth_token_file = {:?}\nshutdown_grace = \"1s\"\n",
            reg.data_dir().to_str().unwrap(),
            token_file.to_str().unwrap(),
        ),
    )
    .unwrap();

    let mut c = serve_cmd(&[], &[]);
    c.arg("--config").arg(&config);
    let server = Server::start(c);
    assert_eq!(server.base, format!("http://127.0.0.1:{port}"), "the file's port; log:\n{}", server.log());
    check_scores(&server, token).await;
    drop(server);

    // REGSERVE_CONFIG names the file, REGSERVE_PORT wins over its port.
    let other = free_port();
    let server = Server::start(serve_cmd(&[("REGSERVE_CONFIG", &config)], &[("REGSERVE_PORT", other)]));
    assert_eq!(server.base, format!("http://127.0.0.1:{other}"), "the variable's port; log:\n{}", server.log());
    check_scores(&server, token).await;
}

#[tokio::test]
async fn server_runs_with_the_files_port_and_auth_from_its_own_table() {
    let dir = tempfile::tempdir().unwrap();
    let token = "server-config-token";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).unwrap();
    let port = free_port();
    let config = dir.path().join("regserve.toml");
    // One file for both subcommands: `server` takes the top level and its own table.
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nhost = \"127.0.0.1\"\nshutdown_grace = \"1s\"\n\
             [serve]\nmodel = [\"models:/iris@champion\"]\nport = 1\n\
             [server]\nport = {port}\nauth_token_file = {:?}\nauth_reads = true\n",
            dir.path().join("data").to_str().unwrap(),
            token_file.to_str().unwrap(),
        ),
    )
    .unwrap();
    let mut c = Command::new(bin());
    c.args(["server", "--config"]).arg(&config).env_clear().env("RUST_LOG", "info").stdin(Stdio::null());
    let server = Server::start(c);
    assert_eq!(server.base, format!("http://127.0.0.1:{port}"), "[server]'s port; log:\n{}", server.log());
    let url = server.url("/api/2.0/mlflow/registered-models/search");
    let client = reqwest::Client::new();
    assert_eq!(client.get(&url).send().await.unwrap().status(), 401, "auth_reads from [server]");
    let r = client.get(&url).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(dir.path().join("data/registry.db").exists(), "data_dir from the top level");
}
