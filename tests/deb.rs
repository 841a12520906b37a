//! The Debian package (README "Install"): built by `cargo deb` around this build's binary,
//! then read with dpkg's own tools — `dpkg-deb -c` for the file list and modes, `dpkg-deb -e`
//! for the control files and maintainer scripts, `dpkg -x` into a scratch root for the
//! installed unit, snippets and configuration. Nothing is installed on this machine.

use std::path::Path;
use std::process::Command;

fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Builds the package into `dir` and returns its path. `cargo deb --no-build` packages
/// `<target>/release/switchboard`: a scratch target directory holds this build's binary there.
fn build_package(dir: &Path) -> std::path::PathBuf {
    let release = dir.join("target/release");
    std::fs::create_dir_all(&release).expect("target dir");
    std::fs::copy(
        env!("CARGO_BIN_EXE_switchboard"),
        release.join("switchboard"),
    )
    .expect("binary");
    let out = dir.join("out");
    run(Command::new("cargo")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .args(["deb", "--no-build", "--no-strip", "--fast", "-Z", "gz"])
        .arg("--compress-system")
        .arg("--output")
        .arg(&out));
    let mut debs: Vec<_> = std::fs::read_dir(&out)
        .expect("output")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    debs.remove(0)
}

#[test]
fn the_package_installs_a_configurable_service_that_does_not_start_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let deb = build_package(dir.path());

    // Files and modes, as dpkg will create them.
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let entries: Vec<(&str, &str, &str)> = listing
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some((*fields.first()?, *fields.get(1)?, *fields.last()?))
        })
        .collect();
    let mode_of = |path: &str| {
        entries
            .iter()
            .find(|(_, _, p)| *p == path)
            .map(|(mode, owner, _)| (*mode, *owner))
            .unwrap_or_else(|| panic!("{path} not in the package:\n{listing}"))
    };
    assert_eq!(mode_of("./usr/bin/switchboard"), ("-rwxr-xr-x", "0/0"));
    // Never world-readable; its group is the service's (set by the postinst, below).
    assert_eq!(
        mode_of("./etc/switchboard/switchboard.toml"),
        ("-rw-r-----", "0/0")
    );
    for path in [
        "./usr/lib/systemd/system/switchboard.service",
        "./usr/lib/sysusers.d/switchboard.conf",
        "./usr/lib/tmpfiles.d/switchboard.conf",
        "./usr/share/doc/switchboard/README.md",
    ] {
        assert_eq!(mode_of(path), ("-rw-r--r--", "0/0"), "{path}");
    }
    for (mode, _, path) in &entries {
        assert!(
            !mode.ends_with('w') && !path.starts_with("./var/"),
            "{path} {mode}: nothing world-writable, no state shipped"
        );
        assert!(
            !path.contains("credentials") && !path.ends_with(".key"),
            "{path}: no key is shipped"
        );
    }

    // Control files and maintainer scripts.
    let control = dir.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).expect("conffiles");
    assert_eq!(conffiles.trim(), "/etc/switchboard/switchboard.toml");
    let postinst = std::fs::read_to_string(control.join("postinst")).expect("postinst");
    run(Command::new("sh").arg("-n").arg(control.join("postinst")));
    for wanted in [
        "systemd-sysusers switchboard.conf",
        "systemd-tmpfiles --create switchboard.conf",
        "chown root:switchboard /etc/switchboard/switchboard.toml",
        "chmod 0640 /etc/switchboard/switchboard.toml",
        "/etc/switchboard/credentials/at-rest-key",
    ] {
        assert!(
            postinst.contains(wanted),
            "postinst lacks {wanted:?}:\n{postinst}"
        );
    }
    // Installed, not started: no start and no enable on a fresh install (an upgrade
    // restarts the service only if it was running: try-restart).
    let commands = postinst
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with("echo "));
    for line in commands {
        let starts = (line.contains("deb-systemd-invoke") && line.contains(" start "))
            || line.contains("systemctl start")
            || line.contains("enable --now");
        assert!(!starts, "the postinst starts the service: {line}");
    }
    // It re-enables only a service the admin had enabled (upgrades).
    let guard = postinst.find("was-enabled switchboard.service");
    let enable = postinst.find("deb-systemd-helper enable switchboard.service");
    assert!(
        enable.is_none() || guard.is_some_and(|g| Some(g) < enable),
        "the postinst enables the service unconditionally:\n{postinst}"
    );
    assert!(
        postinst.contains("try-restart switchboard.service"),
        "{postinst}"
    );
    let control_text = std::fs::read_to_string(control.join("control")).expect("control");
    assert!(
        control_text.contains("Package: switchboard"),
        "{control_text}"
    );
    assert!(
        control_text.contains("libssl3"),
        "shared libraries found: {control_text}"
    );

    // Unpacked into a scratch root: the unit runs the packaged binary as the packaged user
    // with the packaged configuration, whose state is the unit's state directory.
    let root = dir.path().join("root");
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root));
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/switchboard.service"))
        .expect("unit");
    for wanted in [
        "ExecStart=/usr/bin/switchboard run --config /etc/switchboard/switchboard.toml",
        "ExecStartPre=/usr/bin/switchboard migrate --config /etc/switchboard/switchboard.toml",
        "User=switchboard",
        "StateDirectory=switchboard",
        "LoadCredential=at-rest-key:/etc/switchboard/credentials/at-rest-key",
    ] {
        assert!(unit.contains(wanted), "unit lacks {wanted:?}");
    }
    assert!(root.join("usr/bin/switchboard").is_file());
    let sysusers = std::fs::read_to_string(root.join("usr/lib/sysusers.d/switchboard.conf"))
        .expect("sysusers");
    assert!(
        sysusers.lines().any(|l| l.starts_with("u switchboard ")),
        "{sysusers}"
    );
    let tmpfiles = std::fs::read_to_string(root.join("usr/lib/tmpfiles.d/switchboard.conf"))
        .expect("tmpfiles");
    assert!(
        tmpfiles.contains("d /var/lib/switchboard 0700 switchboard switchboard -"),
        "{tmpfiles}"
    );
    assert!(
        tmpfiles.contains("d /etc/switchboard/credentials 0700 root root -"),
        "{tmpfiles}"
    );
    let text =
        std::fs::read_to_string(root.join("etc/switchboard/switchboard.toml")).expect("config");
    let config = switchboard::config::Config::from_toml(&text).expect("the packaged config parses");
    assert_eq!(config.data_dir, Path::new("/var/lib/switchboard"));
    // The packaged binary is this build's.
    let version = run(Command::new(root.join("usr/bin/switchboard")).arg("--version"));
    assert!(version.starts_with("switchboard "), "{version}");
}
