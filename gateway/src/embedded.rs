//! The embedded PostgreSQL cluster: `initdb` on first use, `postgres` on a unix socket inside
//! the data dir, stopped on shutdown.
//!
//! The server process is a child of a supervisor thread that lives exactly as long as it does.
//! The child asks the kernel for `SIGINT` (PostgreSQL's "fast shutdown") when that thread goes
//! away, so a gateway that is killed outright does not leave an orphaned cluster behind.
//! `initdb` and `postgres` refuse to run as root; when we are root they run as the `postgres`
//! system user, which then owns the cluster directory.
//!
//! A server that exits while the gateway runs is noticed ([`Cluster::exited`]) and can be
//! started again ([`Cluster::restart`]); `startup` decides when.
//!
//! This module knows nothing about schemas or pools: it hands out connect options.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use tokio::sync::oneshot;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::error::{Error, Result};

const PORT: u16 = 5432;

/// Options for creating a cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Disable fsync: only for throwaway test clusters, never for a gateway's own data.
    pub unsafe_no_fsync: bool,
}

/// A running (or reused) cluster.
pub struct Cluster {
    pgdata: PathBuf,
    /// Present when this process started the server; `None` when it found one running.
    server: Option<Server>,
    /// What starting it again needs.
    prepared: Prepared,
    opts: ClusterOptions,
}

struct Server {
    pid: i32,
    /// Resolves with the server's exit status (as text) when it exits.
    exited: oneshot::Receiver<String>,
}

impl Cluster {
    /// Creates (if needed) and starts the cluster in `dir`, or attaches to one that is already
    /// serving there (for example a CLI command next to a running gateway).
    pub async fn start(dir: &Path, opts: ClusterOptions) -> Result<Cluster> {
        let dir = dir.to_path_buf();
        let prepared = tokio::task::spawn_blocking(move || prepare(&dir))
            .await
            .map_err(|e| Error::Embedded(format!("start task failed: {e}")))??;
        let mut cluster = Cluster { pgdata: prepared.pgdata.clone(), server: None, prepared, opts };
        if probe(&cluster.connect_options()).await.is_ok() {
            tracing::info!(pgdata = %cluster.pgdata.display(), "attached to running embedded PostgreSQL");
            return Ok(cluster);
        }
        cluster.launch().await?;
        Ok(cluster)
    }

    /// Starts the server and waits until it answers.
    async fn launch(&mut self) -> Result<()> {
        let log_path = self.prepared.dir.join("postgres.log");
        let (prepared, opts) = (self.prepared.clone(), self.opts.clone());
        let mut server = tokio::task::spawn_blocking({
            let log_path = log_path.clone();
            move || spawn_server(&prepared, &log_path, &opts)
        })
        .await
        .map_err(|e| Error::Embedded(format!("start task failed: {e}")))??;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if server.exited.try_recv().is_ok() {
                return Err(Error::Embedded(format!(
                    "postgres exited during start-up: {}",
                    log_tail(&log_path)
                )));
            }
            match probe(&self.connect_options()).await {
                Ok(()) => break,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => {
                    // SAFETY: plain kill(2) on the pid of our own child.
                    unsafe {
                        libc::kill(server.pid, libc::SIGINT);
                    }
                    return Err(Error::Embedded(format!("postgres not ready after 60 s: {e}")))
                }
            }
        }
        tracing::info!(pgdata = %self.pgdata.display(), pid = server.pid, "embedded PostgreSQL started");
        self.server = Some(server);
        Ok(())
    }

    /// Resolves when the server this process started exits, with its exit status; never for
    /// a cluster this process only attached to. Cancel-safe.
    pub async fn exited(&mut self) -> String {
        match self.server.as_mut() {
            Some(server) => {
                let status = (&mut server.exited).await.unwrap_or_else(|_| "unknown".into());
                self.server = None;
                status
            }
            None => std::future::pending().await,
        }
    }

    /// Starts the server again after it exited (crash recovery is PostgreSQL's own).
    pub async fn restart(&mut self) -> Result<()> {
        if self.server.is_some() {
            return Ok(());
        }
        self.launch().await
    }

    /// Connect options for the cluster's superuser on the unix socket.
    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .host(self.pgdata.to_str().unwrap_or_default())
            .port(PORT)
            .username("postgres")
            .database("postgres")
    }

    pub fn pgdata(&self) -> &Path {
        &self.pgdata
    }

    /// Fast shutdown (disconnect clients, checkpoint), waiting for the server to exit.
    /// A cluster this process only attached to is left running.
    pub async fn stop(mut self) {
        let Some(server) = self.server.take() else { return };
        // SAFETY: plain kill(2) on the pid of our own child.
        unsafe {
            libc::kill(server.pid, libc::SIGINT);
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), server.exited).await;
        tracing::info!("embedded PostgreSQL stopped");
    }
}

/// Does a server answer on the socket?
async fn probe(opts: &PgConnectOptions) -> std::result::Result<(), sqlx::Error> {
    let mut conn = opts.clone().disable_statement_logging().connect().await?;
    conn.ping().await?;
    conn.close().await
}

#[derive(Clone)]
struct Prepared {
    dir: PathBuf,
    pgdata: PathBuf,
    bins: PathBuf,
    runas: Option<RunAs>,
}

/// Finds the binaries, lays out the directories and runs `initdb` on first use.
fn prepare(dir: &Path) -> Result<Prepared> {
    let bins = find_bin_dir()?;
    let runas = RunAs::detect()?;
    fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| Error::io(format!("resolving {}", dir.display()), e))?;
    let pgdata = dir.join("pg");
    let socket = pgdata.join(format!(".s.PGSQL.{PORT}"));
    if socket.as_os_str().len() > 100 {
        return Err(Error::Embedded(format!(
            "data dir path too long for a unix socket ({}): use a shorter GATEWAY_DATA_DIR",
            socket.display()
        )));
    }
    if runas.is_some() {
        // The unprivileged server must be able to reach its directory (traverse only).
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o711))
            .map_err(|e| Error::io(format!("chmod {}", dir.display()), e))?;
    }
    if !pgdata.join("PG_VERSION").exists() {
        initdb(&bins, &pgdata, runas.as_ref())?;
    }
    Ok(Prepared { dir, pgdata, bins, runas })
}

fn spawn_server(p: &Prepared, log_path: &Path, opts: &ClusterOptions) -> Result<Server> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| Error::io(format!("opening {}", log_path.display()), e))?;
    let mut cmd = Command::new(p.bins.join("postgres"));
    cmd.arg("-D").arg(&p.pgdata).arg("-k").arg(&p.pgdata).arg("-p").arg(PORT.to_string());
    cmd.args(["-c", "listen_addresses=", "-c", "max_connections=300"]);
    if opts.unsafe_no_fsync {
        cmd.args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]);
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| Error::io("log fd", e))?)
        .stderr(log);
    if let Some(user) = &p.runas {
        cmd.uid(user.uid).gid(user.gid);
    }
    // SAFETY: prctl and getppid are async-signal-safe; nothing is allocated.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() == 1 {
                // The parent died before prctl took effect.
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
    let (pid_tx, pid_rx) = mpsc::channel();
    let (exit_tx, exit_rx) = oneshot::channel();
    // The supervisor thread spawns the server and waits for it, so the parent-death signal
    // fires when (and only when) the server should go away with us.
    std::thread::Builder::new()
        .name("embedded-postgres".into())
        .spawn(move || match cmd.spawn() {
            Ok(mut child) => {
                let _ = pid_tx.send(Ok(child.id() as i32));
                let status = child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                let _ = exit_tx.send(status);
            }
            Err(e) => {
                let _ = pid_tx.send(Err(e));
            }
        })
        .map_err(|e| Error::io("spawning supervisor thread", e))?;
    let pid = pid_rx
        .recv()
        .map_err(|_| Error::Embedded("supervisor thread died".into()))?
        .map_err(|e| Error::Embedded(format!("cannot start postgres: {e}")))?;
    Ok(Server { pid, exited: exit_rx })
}

/// The unprivileged user to run PostgreSQL as, when we are root.
#[derive(Clone)]
struct RunAs {
    uid: u32,
    gid: u32,
}

impl RunAs {
    fn detect() -> Result<Option<RunAs>> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(None);
        }
        let name = std::ffi::CString::new("postgres").unwrap();
        // SAFETY: getpwnam returns a pointer into static storage or NULL; read at once.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if pw.is_null() {
            return Err(Error::Embedded(
                "running as root, and PostgreSQL refuses root: create a `postgres` system user \
                 or run the gateway as an unprivileged user"
                    .into(),
            ));
        }
        // SAFETY: pw is non-null and points at a valid passwd struct.
        let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        Ok(Some(RunAs { uid, gid }))
    }
}

fn initdb(bins: &Path, pgdata: &Path, runas: Option<&RunAs>) -> Result<()> {
    fs::create_dir_all(pgdata).map_err(|e| Error::io(format!("creating {}", pgdata.display()), e))?;
    fs::set_permissions(pgdata, fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io("chmod pgdata", e))?;
    if let Some(u) = runas {
        std::os::unix::fs::chown(pgdata, Some(u.uid), Some(u.gid))
            .map_err(|e| Error::io(format!("chown {}", pgdata.display()), e))?;
    }
    let mut cmd = Command::new(bins.join("initdb"));
    cmd.arg("-D").arg(pgdata);
    cmd.args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"]);
    if let Some(u) = runas {
        cmd.uid(u.uid).gid(u.gid);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Embedded(format!("cannot run initdb: {e}")))?;
    if !out.status.success() {
        return Err(Error::Embedded(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    tracing::info!(pgdata = %pgdata.display(), "initialised embedded PostgreSQL cluster");
    Ok(())
}

/// Finds the directory holding `initdb` and `postgres`: `PATH` first, then the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir() -> Result<PathBuf> {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if has_both(&d) {
                return Ok(d);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_both(d))
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d).ok_or_else(|| {
        Error::Embedded(
            "no PostgreSQL server binaries (initdb, postgres) on PATH or in /usr/lib/postgresql/*/bin: \
             install them (Debian: apt-get install postgresql) or set DATABASE_URL"
                .into(),
        )
    })
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}
