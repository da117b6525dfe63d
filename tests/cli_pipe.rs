//! The CLI and a reader that stops early: `regserve models list --json | head -1` must end
//! quietly (no panic, no error), however much output is left unwritten.

mod common;

use std::process::Stdio;

use common::Registry;

/// Run `regserve <args>` with its stdout a pipe whose reader is already gone; returns the exit
/// status and stderr.
fn run_into_closed_pipe(reg: &Registry, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = reg.cmd().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    // Close the only read end before the command writes anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_closed_stdout_pipe_ends_the_command_quietly() {
    let reg = Registry::new();
    for name in ["alpha", "beta"] {
        reg.register("iris-v1", name, &[]);
    }
    for args in [&["models", "list", "--json"][..], &["models", "list"][..], &["models", "show", "alpha"][..]] {
        let (status, stderr) = run_into_closed_pipe(&reg, args);
        assert!(status.success(), "{args:?}: {status:?}\n{stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("error"), "{args:?}: {stderr}");
    }
}

#[test]
fn models_list_piped_into_head_prints_one_line_and_no_error() {
    // A real shell pipe (whether `head` closes it before the last write is up to the scheduler;
    // the test above makes sure it is closed).
    let reg = Registry::new();
    for name in ["alpha", "beta"] {
        reg.register("iris-v1", name, &[]);
    }
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{} --data-dir '{}' models list --json | head -1", common::bin(), reg.data_dir().display()))
        .env("RUST_LOG", "warn")
        .output()
        .expect("sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    assert!(!stderr.contains("panicked") && !stderr.contains("error"), "{stderr}");
}
