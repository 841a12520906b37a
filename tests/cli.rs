//! The command line's conventions as a script or a shell sees them: completions and the man
//! page, distinct exit codes, and a closed pipe (`| head`) ending a command quietly.

use std::io::Read;
use std::process::{Command, Stdio};

fn switchboard() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command.env("RUST_LOG", "warn");
    command
}

#[test]
fn completions_and_man_page() {
    let bash = switchboard()
        .args(["completions", "bash"])
        .output()
        .expect("completions");
    assert!(bash.status.success());
    let script = String::from_utf8_lossy(&bash.stdout);
    assert!(script.contains("_switchboard()"), "{script:.400}");
    assert!(script.contains("doctor"), "{script:.400}");
    let man = switchboard().arg("man").output().expect("man");
    assert!(man.status.success());
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH switchboard"),
        "{page:.400}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = switchboard()
        .args(["no-such-command"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

/// A reader that stops reading (`| head -1`): the command ends with status 0 and no panic.
#[test]
fn a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("switchboard.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[server]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("state").display()
        ),
    )
    .expect("config");
    for args in [vec!["man"], vec!["completions", "zsh"], vec!["doctor"]] {
        let mut child = switchboard()
            .args(&args)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        // Close the read end before the command writes anything.
        drop(child.stdout.take());
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr)
            .expect("stderr");
        let status = child.wait().expect("wait");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(status.code(), Some(101), "{args:?}: {stderr}");
    }
}
