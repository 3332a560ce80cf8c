//! A throwaway PostgreSQL cluster on this machine: `initdb` in a directory of its own, a
//! server on a free port of 127.0.0.1, stopped (and its directory removed, when it was a
//! temporary one) when dropped. `followup cluster` runs one under `data/`; the tests run
//! one each, against a real server rather than a stand-in.
//!
//! PostgreSQL refuses to run as root. Started by root, the cluster belongs to the
//! `postgres` user (the Debian package's) and every server program runs as that user
//! through `runuser`; started by anyone else, it runs as them.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// A running local cluster.
#[derive(Debug)]
pub struct LocalCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    /// Removed with the cluster when dropped.
    temporary: bool,
    running: bool,
}

impl LocalCluster {
    /// A new cluster in a fresh temporary directory, removed when dropped.
    pub fn temporary(name: &str) -> anyhow::Result<LocalCluster> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("followup-pg-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cluster = LocalCluster::start_in(&dir)?;
        cluster.temporary = true;
        Ok(cluster)
    }

    /// Starts the cluster in `dir`, creating it there first when `dir` holds none.
    pub fn start_in(dir: &Path) -> anyhow::Result<LocalCluster> {
        let bin = server_programs()?;
        let as_postgres = is_root();
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        if as_postgres {
            // The server checks that its data directory belongs to the user it runs as.
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()?;
            if !status.success() {
                bail!("cannot give {} to the postgres user", dir.display());
            }
        }
        let mut cluster = LocalCluster {
            dir,
            bin,
            port: 0,
            as_postgres,
            temporary: false,
            running: false,
        };
        if !cluster.data().join("PG_VERSION").exists() {
            cluster.run(
                "initdb",
                &[
                    "-D",
                    &cluster.data().to_string_lossy(),
                    "--auth=trust",
                    "--username=postgres",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
            )?;
        }
        cluster.start()?;
        Ok(cluster)
    }

    /// A temporary cluster shared by every holder in this process, stopped and removed when
    /// the last one lets go (tests start one for many cases instead of one each).
    pub fn shared() -> anyhow::Result<Arc<LocalCluster>> {
        static SHARED: Mutex<Weak<LocalCluster>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cluster) = shared.upgrade() {
            return Ok(cluster);
        }
        let cluster = Arc::new(LocalCluster::temporary("shared")?);
        *shared = Arc::downgrade(&cluster);
        Ok(cluster)
    }

    /// Creates database `name` in the cluster: its connection string.
    pub fn database(&self, name: &str) -> anyhow::Result<String> {
        let port = self.port.to_string();
        self.run(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", name],
        )?;
        Ok(format!("postgres://postgres@127.0.0.1:{port}/{name}"))
    }

    fn data(&self) -> PathBuf {
        self.dir.join("pgdata")
    }

    /// The connection string of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server (on a new free port the first time; the same port after
    /// [`stop`](Self::stop), so that clients reconnect to it).
    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.port == 0 {
            self.port = free_port()?;
        }
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.display()
        );
        self.run(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                &self.data().to_string_lossy(),
                "-l",
                &self.dir.join("server.log").to_string_lossy(),
                "-o",
                &options,
            ],
        )?;
        self.running = true;
        Ok(())
    }

    /// Stops the server: `immediate` as a crash would (no checkpoint, clients cut off),
    /// else a fast shutdown.
    pub fn stop(&mut self, immediate: bool) -> anyhow::Result<()> {
        let mode = if immediate { "immediate" } else { "fast" };
        self.run(
            "pg_ctl",
            &[
                "stop",
                "-w",
                "-m",
                mode,
                "-D",
                &self.data().to_string_lossy(),
            ],
        )?;
        self.running = false;
        Ok(())
    }

    /// Runs one of the server programs, as the `postgres` user when this process is root.
    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let output = command
            .args(args)
            .current_dir(&self.dir)
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", path.display()))?;
        if !output.status.success() {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            bail!(
                "{program} failed: {}{}\n{}",
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout),
                log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self.stop(!self.temporary);
        }
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The directory of PostgreSQL's server programs: Debian keeps them in
/// `/usr/lib/postgresql/<major>/bin` (the newest wins), elsewhere they are on the `PATH`.
fn server_programs() -> anyhow::Result<PathBuf> {
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    majors.sort();
    if let Some((_, bin)) = majors.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path).find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
        })
        .context("PostgreSQL's server programs (initdb, pg_ctl) are not installed: install the `postgresql` package (scripts/setup does)")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
