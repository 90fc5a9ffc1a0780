//! The `lcpfs-osd store` tool as an operator uses it: real processes, real files.

use std::path::Path;
use std::process::{Command, Output};

fn tool(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lcpfs-osd"))
        .arg("store")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = tool(dir, args);
    assert!(
        out.status.success(),
        "lcpfs-osd store {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn put_get_ls_stat_snapshot_rollback() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    ok(
        &store,
        &[
            "create",
            "--layout",
            "raidz1",
            "--disks",
            "3",
            "--disk-size",
            "64M",
        ],
    );
    ok(
        &store,
        &["collection", "create", "photos", "--compression", "zstd"],
    );
    let input = tmp.path().join("in");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&input, &data).unwrap();
    ok(&store, &["put", "photos", "big", input.to_str().unwrap()]);
    let output = tmp.path().join("out");
    ok(&store, &["get", "photos", "big", output.to_str().unwrap()]);
    assert!(std::fs::read(&output).unwrap() == data);

    let listing: serde_json::Value =
        serde_json::from_str(&ok(&store, &["ls", "photos", "--json"])).unwrap();
    assert_eq!(listing[0]["name"], "big");
    assert_eq!(listing[0]["size"], 3_000_000);
    let stat: serde_json::Value =
        serde_json::from_str(&ok(&store, &["stat", "photos", "big", "--json"])).unwrap();
    assert!(
        stat["stored_bytes"].as_u64().unwrap() < 3_000_000,
        "zstd compresses a repeating pattern"
    );

    ok(&store, &["snapshot", "photos", "monday"]);
    ok(&store, &["rm", "photos", "big"]);
    let missing = tool(&store, &["get", "photos", "big", "-"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
    let from_snapshot = tool(
        &store,
        &["get", "photos", "big", "-", "--snapshot", "monday"],
    );
    assert!(from_snapshot.stdout == data);
    ok(&store, &["rollback", "photos", "monday"]);
    ok(&store, &["get", "photos", "big", output.to_str().unwrap()]);
    assert!(std::fs::read(&output).unwrap() == data);

    let status: serde_json::Value =
        serde_json::from_str(&ok(&store, &["status", "--json"])).unwrap();
    assert_eq!(status["state"], "ONLINE");
    let scrub: serde_json::Value = serde_json::from_str(&ok(&store, &["scrub", "--json"])).unwrap();
    assert_eq!(scrub["unrecoverable_blocks"], 0);
    assert_eq!(scrub["leaked_rows"], 0);
}

#[test]
fn put_from_stdin_and_errors_have_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    ok(&store, &["create", "--disks", "1", "--disk-size", "16M"]);
    ok(&store, &["collection", "create", "c"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_lcpfs-osd"))
        .arg("store")
        .arg(&store)
        .args(["put", "c", "piped", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"hello from a pipe").unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(ok(&store, &["get", "c", "piped"]), "hello from a pipe");

    let bad = tool(&store, &["create", "--layout", "raidz9", "--disks", "3"]);
    assert_eq!(bad.status.code(), Some(1));
    let unknown = tool(&store, &["ls", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("collection \"nope\""));

    // Rot the only copy: reading it is data loss, exit code 2, and no bytes.
    let disk = store.join("disks/disk0.img");
    let file = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"rot", 16 << 10).unwrap();
    let lost = tool(&store, &["get", "c", "piped"]);
    assert_eq!(lost.status.code(), Some(2));
    assert!(lost.stdout.is_empty());
    assert!(String::from_utf8_lossy(&lost.stderr).contains("data loss"));
}

#[test]
fn a_store_in_use_is_refused_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    ok(&store, &["create", "--disks", "1", "--disk-size", "16M"]);
    let open = lcpfs_engine::Store::open(&store, &Default::default()).unwrap();
    let refused = tool(&store, &["status"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("already open in another process"));
    drop(open);
    ok(&store, &["status"]);
}
