//! Shared helpers for end-to-end tests: run the real `regserve` binary with a temporary data
//! directory, start servers on 127.0.0.1 port 0 and read the bound address from their log.
#![allow(dead_code)]

pub mod pg;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_regserve")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temporary registry (data directory) driven through the CLI.
pub struct Registry {
    pub dir: tempfile::TempDir,
}

impl Registry {
    pub fn new() -> Registry {
        Registry { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.arg("--data-dir").arg(self.data_dir()).env("RUST_LOG", "warn").stdin(Stdio::null());
        c
    }

    /// Run `regserve <args>`; returns the output whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run regserve")
    }

    /// Run and require success.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "regserve {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Register a committed example model (`models/<dir>`) under `name`; extra CLI args follow.
    pub fn register(&self, dir: &str, name: &str, extra: &[&str]) -> serde_json::Value {
        let path = repo().join("models").join(dir);
        let mut args = vec!["models", "register", path.to_str().unwrap(), "--name", name, "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&self.ok(&args)).expect("register --json prints JSON")
    }

    /// Start `regserve <args> --port 0` (args start with the subcommand).
    pub fn spawn(&self, args: &[&str]) -> Server {
        let mut c = self.cmd();
        c.args(args).args(["--host", "127.0.0.1", "--port", "0"]).env("RUST_LOG", "info");
        Server::start(c)
    }
}

/// A running regserve process; killed on drop.
pub struct Server {
    child: Child,
    pub base: String,
    pub log: Arc<Mutex<String>>,
}

impl Server {
    pub fn start(mut cmd: Command) -> Server {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn regserve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on http://") {
                    let addr = line[i + "listening on ".len()..].split_whitespace().next().unwrap_or("").to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("regserve did not report its address; log:\n{}", log.lock().unwrap());
            }
        };
        Server { child, base, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Wait until `GET path` answers 200.
    pub async fn wait_ready(&self, path: &str, timeout: Duration) {
        let client = reqwest::Client::new();
        let start = Instant::now();
        loop {
            if let Ok(r) = client.get(self.url(path)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            if start.elapsed() > timeout {
                panic!("{path} not ready after {timeout:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /health` as JSON (per-model status).
    pub async fn health_json(&self) -> serde_json::Value {
        reqwest::Client::new()
            .get(self.url("/health"))
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for the process to exit by itself (e.g. after SIGTERM).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Compare two JSON values, numbers within `tol`; returns a description of the first mismatch.
pub fn close(a: &serde_json::Value, b: &serde_json::Value, tol: f64, at: &str) -> Result<(), String> {
    use serde_json::Value::*;
    match (a, b) {
        (Number(x), Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            if (x - y).abs() <= tol {
                Ok(())
            } else {
                Err(format!("{at}: {x} != {y}"))
            }
        }
        (Array(x), Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().try_for_each(|(i, (p, q))| close(p, q, tol, &format!("{at}[{i}]")))
        }
        (Object(x), Object(y)) if x.len() == y.len() => x.iter().try_for_each(|(k, v)| match y.get(k) {
            Some(w) => close(v, w, tol, &format!("{at}.{k}")),
            None => Err(format!("{at}: key {k} missing")),
        }),
        _ if a == b => Ok(()),
        _ => Err(format!("{at}: {a} != {b}")),
    }
}
