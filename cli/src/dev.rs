//! `lcpfs dev`: a working local cluster with one command — monitors and OSDs on
//! loopback, file-backed disks under a data folder, a replicated pool ready to use,
//! mutual TLS between all of them with a cluster CA made on the first start.
//! Ctrl-C stops everything; running it again reuses the data.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use lcpfs_core::map::{BucketType, PoolKind, PoolSpec};
use lcpfs_core::monitor::{Command, CommandOutcome, Query};
use lcpfs_proto::tls::Tls;
use tokio::process::{Child, Command as Process};

use crate::certs::LoopbackCa;
use lcpfs_client::mon_client::MonClient;

/// Arguments of `lcpfs dev`.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Folder for the cluster's data (created if missing).
    #[arg(long, default_value = "./lcpfs-data")]
    pub data: PathBuf,
    /// Monitors: 1 or 3.
    #[arg(long, default_value_t = 1)]
    pub mons: u16,
    /// OSDs.
    #[arg(long, default_value_t = 4)]
    pub osds: u16,
    /// First port: monitors use BASE.., OSDs BASE+100..
    #[arg(long, default_value_t = 6789)]
    pub base_port: u16,
    /// Size of each OSD's file disk.
    #[arg(long, default_value = "2G")]
    pub disk_size: String,
    /// Plain connections instead of mutual TLS (by default the cluster CA and every
    /// daemon's certificate live under DATA/tls).
    #[arg(long)]
    pub no_tls: bool,
}

/// `--tls-dir DIR` for a daemon of a dev cluster that runs with TLS, with a new
/// certificate for `entity`.
fn tls_flags(tls: Option<&LoopbackCa>, entity: &str) -> anyhow::Result<Vec<String>> {
    Ok(match tls {
        Some(tls) => vec!["--tls-dir".into(), tls.issue(entity)?.display().to_string()],
        None => Vec::new(),
    })
}

/// A daemon binary next to this one.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the lcpfs executable")?;
    let path = exe.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} is missing: build the workspace (cargo build --release)",
            path.display()
        );
    }
    Ok(path)
}

fn spawn(binary: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    Process::new(binary)
        .args(args)
        // TLS only as the flags say, whatever the caller's shell exports.
        .env_remove(lcpfs_proto::tls::TLS_DIR_ENV)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        // Its own process group: Ctrl-C reaches only `lcpfs dev`, which stops the
        // daemons in order.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))
}

/// Stops the daemons, the last started first: the OSDs mark themselves down with
/// the monitors before the monitors go.
async fn terminate(children: &mut [Child]) {
    for child in children.iter_mut().rev() {
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) on a child process id we own; no memory is involved.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    }
}

/// Runs the local cluster until Ctrl-C.
pub async fn run(args: DevArgs) -> anyhow::Result<String> {
    if !matches!(args.mons, 1 | 3) {
        bail!("--mons must be 1 or 3");
    }
    if args.osds < 3 {
        bail!("--osds must be at least 3 (the data pool keeps 3 copies)");
    }
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("cannot create {}", args.data.display()))?;
    let data = args.data.canonicalize()?;
    let mon_bin = sibling("lcpfs-mon")?;
    let osd_bin = sibling("lcpfs-osd")?;
    let names: Vec<String> = ["a", "b", "c"][..args.mons as usize]
        .iter()
        .map(|name| name.to_string())
        .collect();
    let mon_addrs: Vec<String> = (0..args.mons)
        .map(|i| format!("127.0.0.1:{}", args.base_port + i))
        .collect();
    let members = names
        .iter()
        .zip(&mon_addrs)
        .map(|(name, addr)| format!("{name}={addr}"))
        .collect::<Vec<_>>()
        .join(",");
    let tls = if args.no_tls {
        None
    } else {
        Some(LoopbackCa::open_or_create(&data.join("tls"))?)
    };
    let mut children = Vec::new();
    for (name, addr) in names.iter().zip(&mon_addrs) {
        let dir = data.join(format!("mon.{name}"));
        let mut flags = vec!["--data".to_owned(), dir.display().to_string()];
        flags.extend(tls_flags(tls.as_ref(), &format!("mon.{name}"))?);
        if !dir.join("mon.json").exists() {
            std::fs::create_dir_all(&dir)?;
            flags.extend([
                "--id".into(),
                name.clone(),
                "--addr".into(),
                addr.clone(),
                "--initial-members".into(),
                members.clone(),
            ]);
        }
        children.push(spawn(&mon_bin, &flags, &dir.join("log"))?);
    }
    let client_tls = tls
        .as_ref()
        .map(|tls| tls.issue("client.admin"))
        .transpose()?;
    let mon = MonClient::with_tls(
        &mon_addrs,
        client_tls.as_deref().map(Tls::load).transpose()?,
    )?
    .with_timeout(Duration::from_secs(30));
    mon.query::<serde_json::Value>(&Query::Status)
        .await
        .context("the monitors did not come up (see their logs under the data folder)")?;

    let mon_list = mon_addrs.join(",");
    for i in 0..args.osds {
        let dir = data.join(format!("osd.{i}"));
        let mut flags = vec![
            "--data".to_owned(),
            dir.display().to_string(),
            "--mon".into(),
            mon_list.clone(),
        ];
        flags.extend(tls_flags(tls.as_ref(), &format!("osd.{i}"))?);
        if !dir.join("osd.json").exists() {
            std::fs::create_dir_all(&dir)?;
            flags.extend([
                "--addr".into(),
                format!("127.0.0.1:{}", args.base_port + 100 + i),
                "--host".into(),
                "localhost".into(),
                "--disks".into(),
                "1".into(),
                "--disk-size".into(),
                args.disk_size.clone(),
            ]);
        }
        children.push(spawn(&osd_bin, &flags, &dir.join("log"))?);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let map = mon.map(true).await?;
        if map.osds.values().filter(|osd| osd.up).count() >= args.osds as usize {
            let pools = [
                (
                    "data",
                    PoolKind::Replicated {
                        size: 3,
                        min_size: 2,
                    },
                ),
                ("ec", PoolKind::Erasure { k: 2, m: 1 }),
            ];
            for (name, kind) in pools {
                if map.pool_by_name(name).is_some() {
                    continue;
                }
                let spec = PoolSpec {
                    name: name.into(),
                    kind,
                    pg_num: 32,
                    failure_domain: BucketType::Osd,
                    device_class: None,
                    compression: None,
                };
                if let CommandOutcome::Refused { reason } =
                    mon.command(&Command::PoolCreate { spec }).await?
                {
                    bail!("cannot create pool {name}: {reason}");
                }
            }
            break;
        }
        if Instant::now() >= deadline {
            terminate(&mut children).await;
            bail!(
                "the OSDs did not come up (see the logs under {})",
                data.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let keyring = data.join("mon.a").join("keyring");
    let env = data.join("lcpfs.env");
    let tls_line = match &client_tls {
        Some(dir) => format!("export LCPFS_TLS_DIR={}\n", dir.display()),
        None => "unset LCPFS_TLS_DIR\n".to_owned(),
    };
    std::fs::write(
        &env,
        format!(
            "export LCPFS_MON={mon_list}\nexport LCPFS_KEYRING={}\n{tls_line}",
            keyring.display()
        ),
    )?;
    println!(
        "LCPFS is running: {} monitor(s) on {mon_list}, {} OSDs, pools 'data' (3 copies) and 'ec' (erasure coded 2+1).\n\
         In another shell:\n  . {}\n  lcpfs status\n  lcpfs put data hello ./README.md\n  lcpfs get data hello -\n  lcpfs ls data\n\
         Logs are under {}. Press Ctrl-C to stop.",
        args.mons,
        args.osds,
        env.display(),
        data.display()
    );
    let mut monitor_exit = Box::pin(async {
        loop {
            for (index, child) in children.iter_mut().enumerate() {
                if let Ok(Some(status)) = child.try_wait() {
                    return (index, status);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let outcome = tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok("stopped".to_owned()),
        (index, status) = &mut monitor_exit => Err(anyhow::anyhow!(
            "daemon {index} exited ({status}); see the logs under {}", data.display()
        )),
    };
    drop(monitor_exit);
    terminate(&mut children).await;
    outcome
}
