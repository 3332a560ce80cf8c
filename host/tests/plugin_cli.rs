//! `followup plugin list|deploy|rollback` against a running host's admin API.

mod common;

use common::{Kill, address_in, first_lines, guest};
use std::process::{Command, Stdio};

const TOKEN_ENV: &str = "FOLLOWUP_ADMIN_TOKEN";
const TOKEN: &str = "cli-admin-token";

fn plugin_cli(admin: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_followup"))
        .arg("plugin")
        .args(args)
        .args(["--admin", admin])
        .env(TOKEN_ENV, TOKEN)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_plugin_commands_drive_a_running_host() {
    let dir = std::env::temp_dir().join(format!("followup-plugin-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let booker = guest("capacity-booker", "capacity_booker");
    let echo = guest("echo-guest", "echo_guest");
    let config = dir.join("followup.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[token]\nmode = \"off\"\n\
             [plugins.booker]\npath = {booker:?}\nkv = true\n\
             [[routes]]\npath = \"/workorders/{{0}}/followup\"\nkind = \"book-job\"\nplugin = \"booker\"\n\
             [[routes]]\npath = \"/search\"\nkind = \"appointment-search\"\nplugin = \"booker\"\n"
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_followup"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env(TOKEN_ENV, TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Kill(child);
    let lines = first_lines(&mut child, 2);
    let admin = format!(
        "http://{}",
        address_in(&lines[1], "followup admin API on http://")
    );

    let (ok, listed) = plugin_cli(&admin, &["list"]);
    assert!(ok, "{listed}");
    assert!(listed.contains("\"name\":\"booker\""), "{listed}");

    // The echo guest cannot serve the search route: refused, and the command fails.
    let (ok, refused) = plugin_cli(&admin, &["deploy", "booker", echo.to_str().unwrap()]);
    assert!(!ok, "{refused}");
    assert!(refused.contains("does not export"), "{refused}");

    // Deploying a component (here the same one again) answers its version.
    let (ok, deployed) = plugin_cli(&admin, &["deploy", "booker", booker.to_str().unwrap()]);
    assert!(ok, "{deployed}");
    assert!(deployed.contains("\"version\":\"sha256:"), "{deployed}");

    let (ok, missing) = plugin_cli(&admin, &["rollback", "booker", "sha256:0123456789ab"]);
    assert!(!ok, "{missing}");
    assert!(missing.contains("404"), "{missing}");

    // Without the token the CLI refuses before calling.
    let out = Command::new(env!("CARGO_BIN_EXE_followup"))
        .args(["plugin", "list", "--admin", &admin])
        .env_remove(TOKEN_ENV)
        .output()
        .unwrap();
    assert!(!out.status.success());
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}
