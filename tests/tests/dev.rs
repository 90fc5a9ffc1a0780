//! `lcpfs dev` as a newcomer uses it: a daemon killed under it is reported and
//! started again while the rest keep serving, and however `lcpfs dev` stops (a
//! signal during startup, SIGTERM, SIGKILL) no daemon is left running.

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use lcpfs_tests::{command, free_port, signal_pid, wait_for};

/// One `lcpfs dev` at a time: each spans ports from its base to 1,100 above it,
/// where another's would overlap.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An `lcpfs dev` of 3 OSDs in a folder of its own, its output in a file.
struct Dev {
    child: Child,
    data: PathBuf,
    output: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dev {
    fn start(extra: &[&str]) -> Dev {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let output = dir.path().join("output");
        let file = std::fs::File::create(&output).unwrap();
        let base = free_port().to_string();
        let child = command("lcpfs")
            .args(["dev", "--data"])
            .arg(&data)
            .args(["--base-port", &base, "--osds", "3", "--disk-size", "256M"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start lcpfs dev");
        Dev {
            child,
            data,
            output,
            _dir: dir,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Waits for the cluster to be up: the env file is written last.
    async fn ready(&self) {
        let env = self.data.join("lcpfs.env");
        wait_for("lcpfs dev to be up", Duration::from_secs(120), || {
            let up = env.exists();
            async move { up.then_some(()) }
        })
        .await;
    }

    /// `lcpfs ARGS` with the environment of the env file `lcpfs dev` wrote.
    fn lcpfs(&self, args: &[&str]) -> Output {
        let env = std::fs::read_to_string(self.data.join("lcpfs.env")).unwrap();
        let mut lcpfs = command("lcpfs");
        for line in env.lines() {
            if let Some((key, value)) = line
                .strip_prefix("export ")
                .and_then(|rest| rest.split_once('='))
                && key != "PATH"
            {
                lcpfs.env(key, value);
            }
        }
        lcpfs
            .env("LCPFS_TIMEOUT", "10")
            .args(args)
            .output()
            .unwrap()
    }

    fn signal(&self, signal: &str) {
        signal_pid(self.child.id(), signal);
    }

    /// Waits for `lcpfs dev` itself to exit.
    async fn exited(&mut self) {
        let child = &mut self.child;
        wait_for("lcpfs dev to exit", Duration::from_secs(60), || {
            let done = child.try_wait().unwrap().is_some();
            async move { done.then_some(()) }
        })
        .await;
    }
}

/// Process ids of the daemons running on `data` (their command lines name it),
/// with their command lines.
fn daemons_of(data: &Path) -> Vec<(u32, String)> {
    let needle = data.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        // Zombies have an empty command line: only the living count.
        if cmdline.contains("lcpfs-") && cmdline.contains(&needle) {
            found.push((pid, cmdline));
        }
    }
    found
}

fn pid_of(data: &Path, daemon: &str) -> Option<u32> {
    let dir = data.join(daemon).display().to_string();
    daemons_of(data)
        .into_iter()
        .find(|(_, cmdline)| cmdline.contains(&format!("{dir} ")))
        .map(|(pid, _)| pid)
}

async fn none_left(data: &Path) {
    wait_for(
        "every daemon of the stopped lcpfs dev to exit",
        Duration::from_secs(60),
        || {
            let left = daemons_of(data);
            async move { left.is_empty().then_some(()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_osd_is_reported_and_started_again_while_the_rest_serve() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut dev = Dev::start(&[]);
    dev.ready().await;
    let status = dev.lcpfs(&["status"]);
    assert!(status.status.success(), "{status:?}");
    assert!(
        dev.output().contains("/metrics"),
        "the banner lists the metrics endpoints"
    );

    let victim = pid_of(&dev.data, "osd.1").expect("osd.1 runs");
    signal_pid(victim, "KILL");
    wait_for(
        "lcpfs dev to report the exit",
        Duration::from_secs(30),
        || {
            let output = dev.output();
            async move { output.contains("osd.1 exited").then_some(()) }
        },
    )
    .await;
    assert!(
        dev.child.try_wait().unwrap().is_none(),
        "lcpfs dev keeps running"
    );
    assert!(
        pid_of(&dev.data, "osd.0").is_some() && pid_of(&dev.data, "mon.a").is_some(),
        "the others keep running"
    );

    let again = wait_for("osd.1 to start again", Duration::from_secs(30), || {
        let pid = pid_of(&dev.data, "osd.1").filter(|pid| *pid != victim);
        async move { pid }
    })
    .await;
    assert!(
        dev.output().contains("osd.1 started again"),
        "{}",
        dev.output()
    );
    wait_for("HEALTH_OK with osd.1 back", Duration::from_secs(90), || {
        let status = dev.lcpfs(&["status"]);
        let text = String::from_utf8_lossy(&status.stdout).into_owned();
        async move { text.contains("HEALTH_OK").then_some(()) }
    })
    .await;
    assert_eq!(pid_of(&dev.data, "osd.1"), Some(again));
    let put = dev.lcpfs(&["put", "data", "after-the-restart", "-"]);
    assert!(put.status.success(), "{put:?}");

    dev.signal("TERM");
    dev.exited().await;
    none_left(&dev.data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_daemon_outlives_lcpfs_dev() {
    let _alone = ONE_AT_A_TIME.lock().await;
    // A hang-up during startup, once the monitor runs.
    let mut dev = Dev::start(&["--no-restart"]);
    wait_for("the monitor to start", Duration::from_secs(30), || {
        let started = pid_of(&dev.data, "mon.a").is_some();
        async move { started.then_some(()) }
    })
    .await;
    dev.signal("HUP");
    dev.exited().await;
    none_left(&dev.data).await;

    // SIGKILL, which lcpfs dev cannot catch: the kernel stops its daemons.
    let mut dev = Dev::start(&["--no-restart"]);
    dev.ready().await;
    assert!(!daemons_of(&dev.data).is_empty());
    dev.signal("KILL");
    dev.exited().await;
    none_left(&dev.data).await;
}
