//! Running the binary: a host process that is killed when dropped, the addresses it
//! announces, its subcommands, and configuration files written from builders.

use followup_host::config::Config;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The binary under test.
pub const FOLLOWUP: &str = env!("CARGO_BIN_EXE_followup-cli");

/// The repository root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// A new, empty directory of this test's own.
pub fn scratch(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("followup-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `config` to `dir/followup.toml`; its path.
pub fn write_config(dir: &Path, config: &Config) -> PathBuf {
    let path = dir.join("followup.toml");
    std::fs::write(&path, config.to_toml().expect("config as TOML")).unwrap();
    path
}

/// A running `followup serve`, killed when dropped.
pub struct Host {
    pub child: Child,
    /// `http://127.0.0.1:PORT` of the API.
    pub base: String,
    /// `http://127.0.0.1:PORT` of the admin API, when it was started.
    pub admin: Option<String>,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Host {
    /// Starts `followup serve ARGS…` as `command` sets it up (working directory,
    /// environment, stderr), and reads the addresses it announces: the API's, and the admin
    /// API's when `admin` (the first one or two lines it prints).
    pub fn serve(args: &[&str], admin: bool, setup: impl FnOnce(&mut Command)) -> Host {
        let mut command = Command::new(FOLLOWUP);
        command
            .arg("serve")
            .args(args)
            .env("RUST_LOG", "error")
            // The admin API stays off (and off its default port) unless a test turns it on.
            .env_remove("FOLLOWUP_ADMIN_TOKEN")
            .stdout(Stdio::piped());
        setup(&mut command);
        let mut child = command.spawn().expect("start followup");
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = || {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            line.trim().to_string()
        };
        let base = announced(&line(), "followup listening on ");
        let admin = admin.then(|| announced(&line(), "followup admin API on "));
        Host { child, base, admin }
    }

    /// Kills the host at once (SIGKILL: no shutdown, no flush).
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

fn announced(line: &str, prefix: &str) -> String {
    line.strip_prefix(prefix)
        .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"))
        .to_string()
}

/// Runs `followup ARGS…` in `dir`, quietly: success and everything it printed.
pub fn followup(dir: &Path, args: &[&str]) -> (bool, String) {
    run(Command::new(FOLLOWUP).current_dir(dir).args(args))
}

/// Runs a prepared command: success and everything it printed.
pub fn run(command: &mut Command) -> (bool, String) {
    let out = command
        .env("RUST_LOG", "error")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}
