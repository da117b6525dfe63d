//! Leftovers of interrupted uploads and registrations (staging folders, hidden upload
//! temporaries, registry copies without a version) are swept when the CLI opens the store and
//! when `regserve server` starts, once older than an hour; fresh ones and owned files stay.

mod common;

use std::path::{Path, PathBuf};

use common::Registry;

/// Set `path`'s modification time to two hours ago.
fn age(path: &Path) {
    let ok = std::process::Command::new("touch")
        .args(["-h", "-d", "2 hours ago"])
        .arg(path)
        .status()
        .expect("touch")
        .success();
    assert!(ok, "touch {}", path.display());
}

fn plant_dir(path: &Path) -> PathBuf {
    std::fs::create_dir_all(path).unwrap();
    std::fs::write(path.join("model.onnx"), b"partial").unwrap();
    path.to_path_buf()
}

fn plant_file(path: &Path) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"partial").unwrap();
    path.to_path_buf()
}

#[test]
fn old_leftovers_are_swept_at_store_open_and_fresh_or_owned_files_stay() {
    let reg = Registry::new();
    let v = reg.register("iris-v1", "iris", &[]);
    let art = reg.data_dir().join("artifacts");
    let owned = art.join(v["source"].as_str().unwrap().trim_start_matches("mlflow-artifacts:/"));
    assert!(owned.is_dir(), "{}", owned.display());
    age(&owned);

    let old_staging = plant_dir(&art.join(".staging/0123456789abcdef"));
    let old_copy = plant_dir(&art.join("registry/deadbeefdeadbeefdeadbeefdeadbeef"));
    let old_upload = plant_file(&art.join("0/models/m-1/artifacts/.model.onnx.upload-0123abcd"));
    let old_nested_upload = plant_file(&art.join("1/run/artifacts/sub/.MLmodel.upload-4567ef"));
    for p in [&old_staging, &old_copy, &old_upload, &old_nested_upload] {
        age(p);
    }
    let fresh_staging = plant_dir(&art.join(".staging/fedcba9876543210"));
    let fresh_copy = plant_dir(&art.join("registry/cafecafecafecafecafecafecafecafe"));
    let fresh_upload = plant_file(&art.join("0/models/m-1/artifacts/.conda.yaml.upload-89ab"));
    // Old files that are not temporaries stay: a logged model's own file, a hidden non-upload.
    let logged = plant_file(&art.join("0/models/m-1/artifacts/model.onnx"));
    let hidden = plant_file(&art.join("0/models/m-1/artifacts/.keep"));
    age(&logged);
    age(&hidden);

    let out = reg.cmd().env("RUST_LOG", "info").args(["models", "list", "--json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for gone in [&old_staging, &old_copy, &old_upload, &old_nested_upload] {
        assert!(!gone.exists(), "{} should have been swept\n{stderr}", gone.display());
    }
    for kept in [&owned, &fresh_staging, &fresh_copy, &fresh_upload, &logged, &hidden] {
        assert!(kept.exists(), "{} should have stayed\n{stderr}", kept.display());
    }
    assert!(stderr.contains("removed 4 leftovers"), "{stderr}");
    assert!(stderr.contains("staging=1") && stderr.contains("uploads=2") && stderr.contains("copies=1"), "{stderr}");
    // The version still serves from its files.
    let versions = reg.ok(&["models", "versions", "iris", "--json"]);
    assert!(versions.contains("READY"), "{versions}");

    // Nothing left to sweep: no log line.
    let out = reg.cmd().env("RUST_LOG", "info").args(["models", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("leftovers"));
}

#[tokio::test]
async fn the_registry_server_sweeps_old_leftovers_when_it_starts() {
    let reg = Registry::new();
    let art = reg.data_dir().join("artifacts");
    std::fs::create_dir_all(&art).unwrap();
    let old_upload = plant_file(&art.join("0/models/m-2/artifacts/.model.onnx.upload-77"));
    let old_staging = plant_dir(&art.join(".staging/77"));
    age(&old_upload);
    age(&old_staging);
    let mut cmd = reg.cmd();
    cmd.env("RUST_LOG", "info").args(["server", "--port", "0"]);
    let server = common::Server::start(cmd);
    server.wait_ready("/health", std::time::Duration::from_secs(30)).await;
    assert!(!old_upload.exists() && !old_staging.exists());
    assert!(server.log().contains("removed 2 leftovers"), "{}", server.log());
}
