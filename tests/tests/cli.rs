//! The `lcpfs` command against a running monitor: what an operator types and reads.

use std::process::Output;
use std::time::Duration;

use lcpfs_tests::{MonCluster, command, free_port, http_get, wait_for};

struct Cli {
    mon: String,
    keyring: std::path::PathBuf,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Output {
        command("lcpfs")
            .args(args)
            .env("LCPFS_MON", &self.mon)
            .env("LCPFS_KEYRING", &self.keyring)
            .env("LCPFS_TIMEOUT", "10")
            .output()
            .expect("run lcpfs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "lcpfs {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "lcpfs {args:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut cluster = MonCluster::new(&["a"], &["--metrics-addr", &metrics]);
    cluster.bootstrap(&["a"]);
    cluster.ready().await;
    let cli = Cli {
        mon: cluster.mons["a"].addr.clone(),
        keyring: cluster.mons["a"].data.join("keyring"),
    };
    // The monitor writes it once the cluster is bootstrapped, beside serving.
    let keyring = wait_for("the admin keyring", Duration::from_secs(10), || {
        let read = std::fs::read_to_string(&cli.keyring).ok();
        async move { read.filter(|keyring| !keyring.is_empty()) }
    })
    .await;
    assert!(keyring.starts_with("[client.admin]\n\tkey = "), "{keyring}");

    let status = cli.ok(&["status"]);
    assert!(status.contains("health: HEALTH_OK"), "{status}");
    assert!(
        status.contains("mon: 1 daemons, quorum a (leader a"),
        "{status}"
    );
    let json: serde_json::Value = serde_json::from_str(&cli.ok(&["status", "--json"])).unwrap();
    assert_eq!(json["health"], "HEALTH_OK");

    // Pools need OSDs on enough hosts; the refusal says so.
    let refused = cli.fails(&["pool", "create", "data", "--ec", "4+2"]);
    assert!(
        refused.contains("needs 6 distinct hosts but the cluster has only 0"),
        "{refused}"
    );
    let refused = cli.fails(&["pool", "create", "data", "--pg-num", "0"]);
    assert!(refused.contains("pg_num is 0"), "{refused}");
    let refused = cli.fails(&["pool", "rm", "data"]);
    assert!(refused.contains("--yes-i-really-mean-it"), "{refused}");

    // Auth entities.
    let added: serde_json::Value =
        serde_json::from_str(&cli.ok(&["auth", "add", "client.backup", "--json"])).unwrap();
    let key = added["value"].as_str().unwrap().to_owned();
    assert_eq!(key.len(), 64);
    let got = cli.ok(&["auth", "get", "client.backup"]);
    assert_eq!(got.trim(), format!("[client.backup]\n\tkey = {key}"));
    assert!(cli.ok(&["auth", "ls"]).contains("[client.admin]"));
    assert!(
        cli.fails(&["auth", "add", "client.backup"])
            .contains("already exists")
    );
    cli.ok(&["auth", "rm", "client.backup"]);
    assert!(
        cli.fails(&["auth", "get", "client.backup"])
            .contains("does not exist")
    );
    assert!(
        cli.fails(&["auth", "rm", "client.admin"])
            .contains("cannot be removed")
    );

    assert!(
        cli.fails(&["osd", "map", "data", "an-object"])
            .contains("pool 'data' does not exist")
    );
    let tree = cli.ok(&["osd", "tree"]);
    assert!(tree.contains("root default"), "{tree}");
    assert!(cli.ok(&["osd", "df"]).starts_with("  ID  HOST"));
    assert!(cli.ok(&["pg", "ls"]).starts_with("PG "));
    assert!(
        cli.fails(&["osd", "set-full-ratio", "1.5"])
            .contains("a fraction in (0, 1]")
    );
    cli.ok(&["osd", "set-full-ratio", "0.9"]);
    assert!(
        cli.fails(&["osd", "lost", "0"])
            .contains("--yes-i-really-mean-it")
    );
    let stat = cli.ok(&["mon", "stat"]);
    assert!(stat.starts_with("1 mons at {a="), "{stat}");

    // Prometheus metrics and the health endpoint.
    let health = http_get(&metrics, "/health");
    assert!(
        health.starts_with("HTTP/1.0 200") || health.starts_with("HTTP/1.1 200"),
        "{health}"
    );
    let text = http_get(&metrics, "/metrics");
    for metric in [
        "lcpfs_mon_raft_term 1",
        "lcpfs_mon_is_leader 1",
        "lcpfs_mon_map_epoch",
    ] {
        assert!(text.contains(metric), "{metric} missing: {text}");
    }
}

#[test]
fn errors_name_what_is_missing_or_unreachable() {
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let out = command("lcpfs")
            .args(args)
            .env_remove("LCPFS_MON")
            .env_remove("LCPFS_KEYRING")
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8(out.stderr).unwrap()
    };
    let error = run(&["status"], &[]);
    assert!(
        error.contains("pass --mon HOST:PORT") && error.contains("LCPFS_MON"),
        "{error}"
    );
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let error = run(&["status", "--mon", &addr, "--timeout", "1"], &[]);
    assert!(
        error.contains(&addr) && error.contains("unreachable"),
        "{error}"
    );
    let error = run(
        &[
            "status",
            "--mon",
            &addr,
            "--keyring",
            "/nonexistent/keyring",
        ],
        &[],
    );
    assert!(
        error.contains("cannot read the keyring /nonexistent/keyring"),
        "{error}"
    );
}
