//! `followup plugin new` → a project that builds, passes its tests, passes `plugin check`
//! and answers 200 through `plugin run`, per language.

use crate::support::{followup, workspace};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// A virtualenv with componentize-py (`requirements.txt`), kept under `target/` between runs.
fn python_venv(requirements: &Path) -> std::path::PathBuf {
    let venv = target().join("scaffold/py-venv");
    if !venv.join("bin/componentize-py").exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "-r"])
            .arg(requirements));
    }
    venv
}

fn run(command: &mut Command) {
    let status = command.status().unwrap();
    assert!(status.success(), "{command:?}");
}

/// `plugin new NAME --lang LANG` in a fresh directory, then `build` (the language's test
/// and build commands, in the project), then `plugin check` and `plugin run` of the
/// component at `wasm` (relative to the project). Prints the time it all took.
fn new_build_check_run(lang: &str, name: &str, wasm: &str, build: impl FnOnce(&Path)) {
    let parent = std::env::temp_dir().join(format!("followup-new-{lang}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&parent);
    std::fs::create_dir_all(&parent).unwrap();
    let started = Instant::now();
    let (ok, text) = followup(&parent, &["plugin", "new", name, "--lang", lang]);
    assert!(ok, "{text}");
    let project = parent.join(name);
    build(&project);
    let (ok, text) = followup(
        &project,
        &["plugin", "check", wasm, "--config", "host.toml"],
    );
    assert!(ok, "{text}");
    assert!(text.contains("serves book-job routes"), "{text}");
    // Least privilege: the project's component asks for no key-value store (JavaScript and
    // Python build for the world booker-no-kv), and host.toml grants none.
    assert!(!text.contains("key-value store"), "{lang}: {text}");
    assert!(text.contains("when granted nothing"), "{lang}: {text}");
    let host = std::fs::read_to_string(project.join("host.toml")).unwrap();
    assert!(host.lines().any(|l| l == "kv = false"), "{lang}: {host}");
    let run_args = [
        "plugin",
        "run",
        wasm,
        "--config",
        "host.toml",
        "--book-job",
        "samples/book-job.json",
    ];
    let (ok, text) = followup(&project, &run_args);
    assert!(ok, "{text}");
    assert!(
        text.contains("→ 200") && text.contains("\"OrderNum\": \"FU-"),
        "{text}"
    );
    println!(
        "{lang}: plugin new → passing plugin run in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&parent);
}

fn target() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

#[test]
fn a_new_rust_plugin_builds_tests_checks_and_runs() {
    // Built into a target directory kept between runs, so a second run only builds the
    // plugin itself.
    let wasm = target().join("scaffold/wasm32-wasip2/release/demo_rules.wasm");
    new_build_check_run("rust", "demo-rules", wasm.to_str().unwrap(), |project| {
        let cargo = || {
            let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
            c.current_dir(project)
                .env("CARGO_TARGET_DIR", target().join("scaffold"));
            c
        };
        run(cargo().args(["test", "--release"]));
        run(cargo().args(["build", "--release", "--target", "wasm32-wasip2"]));
    });
}

#[test]
fn a_new_python_plugin_builds_tests_checks_and_runs() {
    new_build_check_run("python", "demo-py", "demo-py.wasm", |project| {
        run(Command::new("python3")
            .args(["-m", "unittest"])
            .current_dir(project));
        let venv = python_venv(&project.join("requirements.txt"));
        run(Command::new(project.join("build.sh"))
            .current_dir(project)
            .env("COMPONENTIZE_PY", venv.join("bin/componentize-py")));
    });
}

#[test]
fn a_new_javascript_plugin_builds_tests_checks_and_runs() {
    new_build_check_run("js", "demo-js", "demo-js.wasm", |project| {
        let npm = |args: &[&str]| run(Command::new("npm").args(args).current_dir(project));
        npm(&["install", "--no-audit", "--no-fund", "--silent"]);
        npm(&["test", "--silent"]);
        npm(&["run", "build", "--silent"]);
    });
}
