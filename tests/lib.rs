//! Test support shared by the integration tests: the paths of the guests that
//! `tests/build.rs` builds from source.

/// Components built from `plugins/*` and `tests/guests/*` for `wasm32-wasip2`.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));

    /// Every guest the host loads; `HTTP_CALLER` is the one it must refuse.
    pub const ALL: &[&str] = &[CAPACITY_BOOKER, REST_FORWARDER, TRAP, LOOPER, ECHO, HOSTILE];
}

/// Rewrites components the way a test needs them, without a toolchain.
pub mod component {
    /// The name of the section in which the SDK stamps the WIT version.
    const VERSION_SECTION: &str = "servicemobility:booking-api-version";

    /// `bytes` with a custom section appended at the top level: the same code under
    /// another hash, i.e. another version.
    pub fn with_custom_section(bytes: &[u8], name: &str, data: &[u8]) -> Vec<u8> {
        let mut payload = leb128(name.len());
        payload.extend_from_slice(name.as_bytes());
        payload.extend_from_slice(data);
        let mut out = bytes.to_vec();
        out.push(0);
        out.extend(leb128(payload.len()));
        out.extend(payload);
        out
    }

    /// `bytes` with the SDK's WIT version stamp replaced by `version` (same length).
    pub fn restamp(bytes: &[u8], from: &str, version: &str) -> Vec<u8> {
        assert_eq!(from.len(), version.len(), "the stamp is patched in place");
        // A custom section's name is followed directly by its data.
        let stamp = format!("{VERSION_SECTION}{from}");
        let at = bytes
            .windows(stamp.len())
            .position(|w| w == stamp.as_bytes())
            .expect("the SDK stamps the WIT version");
        let mut patched = bytes.to_vec();
        let version_at = at + VERSION_SECTION.len();
        patched[version_at..version_at + version.len()].copy_from_slice(version.as_bytes());
        patched
    }

    fn leb128(mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }
}

/// The host as a process of its own, for what only a process shows: its resident memory,
/// its log.
pub mod process {
    use std::io::{BufRead, BufReader};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};

    /// Starts the host binary `exe` (`followup-bench-host`, which serves a config as
    /// `followup serve` does) on `config`, which listens on `127.0.0.1:0`; the child and the
    /// base URL it announced on its first line.
    pub fn start(exe: &str, config: &Path, stderr: Stdio, rust_log: &str) -> (Child, String) {
        let mut child = Command::new(exe)
            .arg(config)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start the host");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("the host's first line");
        let base = line
            .trim()
            .strip_prefix("followup listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        (child, base)
    }
}
