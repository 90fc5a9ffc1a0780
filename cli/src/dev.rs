//! `lcpfs dev`: a working local cluster with one command — monitors and OSDs on
//! loopback, file-backed disks under a data folder, a replicated pool ready to use,
//! mutual TLS between all of them with a cluster CA made on the first start.
//!
//! It supervises its daemons as systemd would a Ceph host's: one that exits is
//! reported by name with its log, the others keep serving, and it is started again
//! after a backoff (1 s, doubling to 30 s; `--no-restart` leaves it down), so that
//! killing an OSD shows the cluster degrade and heal. Ctrl-C, SIGTERM or SIGHUP, at
//! any moment including startup, stops every daemon; a daemon whose `lcpfs dev` is
//! killed outright gets SIGTERM from the kernel. Running it again reuses the data.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
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
    /// First port: monitors use BASE.., OSDs BASE+100.., and each daemon's metrics
    /// endpoint the port 1000 above its own.
    #[arg(long, default_value_t = 6789)]
    pub base_port: u16,
    /// Size of each OSD's file disk.
    #[arg(long, default_value = "2G")]
    pub disk_size: String,
    /// Plain connections instead of mutual TLS (by default the cluster CA and every
    /// daemon's certificate live under DATA/tls).
    #[arg(long)]
    pub no_tls: bool,
    /// Leave a daemon that exits down instead of starting it again.
    #[arg(long)]
    pub no_restart: bool,
}

/// Each daemon's metrics endpoint listens this far above its service port.
const METRICS_PORT_OFFSET: u16 = 1000;
/// The first wait before a daemon that exited is started again; it doubles with
/// each exit that follows soon after, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A daemon that ran this long before exiting starts again after the first backoff.
const STABLE_RUN: Duration = Duration::from_secs(60);

/// One daemon of the cluster: how to start it, and its process while it runs.
struct Daemon {
    /// `mon.a`, `osd.2`.
    name: String,
    binary: PathBuf,
    /// Flags of every start.
    args: Vec<String>,
    /// Flags of the first start only, while its identity file is missing.
    first_args: Vec<String>,
    identity: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    started: Instant,
    /// Exits in a row, each soon after its start (the backoff doubles with each).
    quick_exits: u32,
    /// When to start it again, after it exited.
    restart_at: Option<Instant>,
}

impl Daemon {
    /// The daemon `name` of `binary`, kept in `dir` (its log there too), whose
    /// first start has made `identity` there.
    fn new(
        name: String,
        binary: &Path,
        dir: &Path,
        identity: &str,
        args: Vec<String>,
        first_args: Vec<String>,
    ) -> Daemon {
        Daemon {
            name,
            binary: binary.to_path_buf(),
            args,
            first_args,
            identity: dir.join(identity),
            log: dir.join("log"),
            child: None,
            started: Instant::now(),
            quick_exits: 0,
            restart_at: None,
        }
    }

    fn start(&mut self) -> anyhow::Result<()> {
        let mut args = self.args.clone();
        if !self.identity.exists() {
            args.extend(self.first_args.iter().cloned());
        }
        self.child = Some(spawn(&self.binary, &args, &self.log)?);
        self.started = Instant::now();
        self.restart_at = None;
        Ok(())
    }

    /// The exit status, once the daemon's process has exited (and no longer
    /// counts as running).
    fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Notices an exit (reported, and a restart planned unless `restart` is off)
    /// and starts the daemon again when its backoff is over.
    fn supervise(&mut self, restart: bool) {
        if let Some(status) = self.exited() {
            let ran = self.started.elapsed();
            self.quick_exits = if ran >= STABLE_RUN {
                1
            } else {
                self.quick_exits + 1
            };
            eprintln!(
                "{} exited ({status}) after {} s; log at {}",
                self.name,
                ran.as_secs(),
                self.log.display()
            );
            if restart {
                let backoff =
                    (FIRST_BACKOFF * 2u32.saturating_pow(self.quick_exits - 1)).min(MAX_BACKOFF);
                eprintln!(
                    "{}: starting it again in {} s",
                    self.name,
                    backoff.as_secs()
                );
                self.restart_at = Some(Instant::now() + backoff);
            } else {
                eprintln!(
                    "{} stays down (--no-restart); the others keep serving",
                    self.name
                );
            }
        }
        if self.restart_at.is_some_and(|at| Instant::now() >= at) {
            match self.start() {
                Ok(()) => eprintln!("{} started again", self.name),
                Err(error) => {
                    eprintln!("{}: {error:#}", self.name);
                    self.quick_exits += 1;
                    self.restart_at = Some(Instant::now() + MAX_BACKOFF);
                }
            }
        }
    }
}

/// Resolves on Ctrl-C, SIGTERM or SIGHUP (a closed terminal).
async fn stop_requested() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).ok();
    tokio::select! {
        () = lcpfs_core::shutdown::requested() => {}
        _ = async {
            match hangup.as_mut() {
                Some(hangup) => hangup.recv().await,
                None => std::future::pending().await,
            }
        } => {}
    }
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
    let mut command = Process::new(binary);
    command
        .args(args)
        // TLS only as the flags say, whatever the caller's shell exports.
        .env_remove(lcpfs_proto::tls::TLS_DIR_ENV)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        // Its own process group: Ctrl-C reaches only `lcpfs dev`, which stops the
        // daemons in order.
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: prctl(2) between fork and exec, touching no memory: the kernel sends
    // the daemon SIGTERM if `lcpfs dev` dies without stopping it (a SIGKILL).
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))
}

/// Stops the daemons, the last started first: the OSDs mark themselves down with
/// the monitors before the monitors go.
async fn terminate(daemons: &mut [Daemon]) {
    for child in daemons.iter_mut().rev().filter_map(|d| d.child.as_mut()) {
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) on a child process id we own; no memory is involved.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    }
}

/// Runs the local cluster until Ctrl-C, SIGTERM or SIGHUP.
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
    let mut daemons = Vec::new();
    // One listener for the whole run, so that no signal falls between two.
    let stop = stop_requested();
    tokio::pin!(stop);
    // A stop request during startup stops what has started so far.
    let started = tokio::select! {
        started = start(&args, &data, &mut daemons) => started,
        () = &mut stop => Err(anyhow::anyhow!("stopped during startup")),
    };
    let banner = match started {
        Ok(banner) => banner,
        Err(error) => {
            terminate(&mut daemons).await;
            return Err(error);
        }
    };
    println!("{banner}");
    let restart = !args.no_restart;
    let supervise = async {
        loop {
            for daemon in &mut daemons {
                daemon.supervise(restart);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    tokio::select! {
        () = stop => {}
        _ = supervise => {}
    }
    terminate(&mut daemons).await;
    Ok("stopped".to_owned())
}

/// Starts the monitors, then the OSDs, creates the pools and writes the env
/// file; returns the banner.
async fn start(args: &DevArgs, data: &Path, daemons: &mut Vec<Daemon>) -> anyhow::Result<String> {
    let mon_bin = sibling("lcpfs-mon")?;
    let osd_bin = sibling("lcpfs-osd")?;
    let names: Vec<String> = ["a", "b", "c"][..args.mons as usize]
        .iter()
        .map(|name| name.to_string())
        .collect();
    let mon_ports: Vec<u16> = (0..args.mons).map(|i| args.base_port + i).collect();
    let mon_addrs: Vec<String> = mon_ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
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
    let metrics = |port: u16| format!("127.0.0.1:{}", port + METRICS_PORT_OFFSET);
    let mut endpoints = Vec::new();
    for ((name, addr), port) in names.iter().zip(&mon_addrs).zip(&mon_ports) {
        let dir = data.join(format!("mon.{name}"));
        std::fs::create_dir_all(&dir)?;
        let mut flags = vec![
            "--data".to_owned(),
            dir.display().to_string(),
            "--metrics-addr".into(),
            metrics(*port),
        ];
        flags.extend(tls_flags(tls.as_ref(), &format!("mon.{name}"))?);
        endpoints.push(format!("mon.{name} http://{}/metrics", metrics(*port)));
        let mut daemon = Daemon::new(
            format!("mon.{name}"),
            &mon_bin,
            &dir,
            "mon.json",
            flags,
            vec![
                "--id".into(),
                name.clone(),
                "--addr".into(),
                addr.clone(),
                "--initial-members".into(),
                members.clone(),
            ],
        );
        daemon.start()?;
        daemons.push(daemon);
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
        std::fs::create_dir_all(&dir)?;
        let port = args.base_port + 100 + i;
        let mut flags = vec![
            "--data".to_owned(),
            dir.display().to_string(),
            "--mon".into(),
            mon_list.clone(),
            "--metrics-addr".into(),
            metrics(port),
        ];
        flags.extend(tls_flags(tls.as_ref(), &format!("osd.{i}"))?);
        endpoints.push(format!("osd.{i} http://{}/metrics", metrics(port)));
        let mut daemon = Daemon::new(
            format!("osd.{i}"),
            &osd_bin,
            &dir,
            "osd.json",
            flags,
            vec![
                "--addr".into(),
                format!("127.0.0.1:{port}"),
                "--host".into(),
                "localhost".into(),
                "--disks".into(),
                "1".into(),
                "--disk-size".into(),
                args.disk_size.clone(),
            ],
        );
        daemon.start()?;
        daemons.push(daemon);
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
        if let Some(exited) = daemons.iter_mut().find_map(|daemon| {
            daemon.exited()?;
            Some(&*daemon)
        }) {
            bail!(
                "{} exited during startup; log at {}",
                exited.name,
                exited.log.display()
            );
        }
        if Instant::now() >= deadline {
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
    // The binaries beside this one, first on PATH: `lcpfs` of this build.
    let bin_dir = std::env::current_exe()
        .context("cannot find the lcpfs executable")?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    std::fs::write(
        &env,
        format!(
            "export PATH={}:$PATH\nexport LCPFS_MON={mon_list}\nexport LCPFS_KEYRING={}\n{tls_line}",
            bin_dir.display(),
            keyring.display()
        ),
    )?;
    Ok(format!(
        "LCPFS is running: {} monitor(s) on {mon_list}, {} OSDs, pools 'data' (3 copies) and 'ec' (erasure coded 2+1).\n\
         In another shell (the env file puts this build's lcpfs on PATH):\n  . {}\n  lcpfs status\n  lcpfs put data hello ./README.md\n  lcpfs get data hello -\n  lcpfs ls data\n\
         Metrics:\n  {}\n\
         Logs are under {}. A daemon that exits is started again{}. Press Ctrl-C to stop.",
        args.mons,
        args.osds,
        env.display(),
        endpoints.join("\n  "),
        data.display(),
        if args.no_restart {
            " only with the next `lcpfs dev` (--no-restart)"
        } else {
            " after a backoff"
        }
    ))
}
