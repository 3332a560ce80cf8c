//! Shared test support: one plugin runtime per test process, servers on 127.0.0.1:0, and
//! tokens and payloads.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use followup_host::config::Config;
use followup_host::runtime::PluginRuntime;
use followup_host::runtime::sandbox::RuntimeConfig;
use followup_host::{App, run};
use followup_tests::guests;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use tokio::sync::oneshot;

/// One runtime (engine, pool, compiled components) for all tests: components compile once
/// per process, and the pool's address-space reservation is made once.
pub fn runtime() -> Arc<PluginRuntime> {
    static RUNTIME: OnceLock<Arc<PluginRuntime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| PluginRuntime::new(&shared_runtime_config()).expect("runtime"))
        .clone()
}

/// The shared runtime's settings; a test whose config sets others gets its own runtime.
pub fn shared_runtime_config() -> RuntimeConfig {
    RuntimeConfig {
        max_instances: 64,
        ..RuntimeConfig::default()
    }
}

/// Behaviours of the hostile guest; each is served as plugin `hostile-NAME` on
/// `/hostile/NAME/{0}` with a 200 ms deadline.
pub const HOSTILE: &[&str] = &[
    "loop",
    "host-call-loop",
    "sleep",
    "memory-bomb",
    "recursion",
    "panic",
    "unreachable",
    "huge-response",
    "log-flood",
    "read-file",
    "read-env",
    "open-socket",
];

/// The deadline of every hostile plugin but `huge-response`.
pub const HOSTILE_TIMEOUT_MS: u64 = 200;

/// The deadline of `huge-response`.
pub const HUGE_RESPONSE_TIMEOUT_MS: u64 = 10_000;

fn hostile_config() -> String {
    let mut text = String::new();
    for behaviour in HOSTILE {
        // The 50 MB answer needs room to be built (the default 64 MiB would stop it first)
        // and time: building, copying and measuring 50 MB takes a few hundred ms.
        let (memory, timeout) = match *behaviour {
            "huge-response" => (128 << 20, HUGE_RESPONSE_TIMEOUT_MS),
            // The bomb reaches its cap well inside the deadline even with the other tests
            // taking both cores (faulting in 64 MiB did not always).
            "memory-bomb" => (16 << 20, HOSTILE_TIMEOUT_MS),
            _ => (64 << 20, HOSTILE_TIMEOUT_MS),
        };
        text.push_str(&format!(
            "[plugins.hostile-{behaviour}]\npath = {:?}\ntimeout_ms = {timeout}\n\
             max_memory_bytes = {memory}\n[plugins.hostile-{behaviour}.config]\n\
             behaviour = {behaviour:?}\n\
             [[routes]]\npath = \"/hostile/{behaviour}/{{0}}\"\nkind = \"book-job\"\n\
             plugin = \"hostile-{behaviour}\"\n",
            guests::HOSTILE
        ));
    }
    text
}

/// Plugins and routes every test server has; `extra` (TOML) is prepended.
pub fn config_text(extra: &str) -> String {
    format!(
        r#"{extra}
[plugins.capacity-booker]
path = {booker:?}
kv = true
[plugins.capacity-booker.config]
now = "2024-06-17T12:00:00Z"
utc_offset_minutes = "-240"

[plugins.echo]
path = {echo:?}

[plugins.trap]
path = {trap:?}

[plugins.looper]
path = {looper:?}
timeout_ms = 200

[[routes]]
name = "followup"
path = "/workorders/{{0}}/followup"
kind = "book-job"
plugin = "capacity-booker"

[[routes]]
name = "appointments"
path = "/appointments/search"
kind = "appointment-search"
plugin = "capacity-booker"

[[routes]]
name = "echo"
path = "/echo/{{0}}"
kind = "book-job"
plugin = "echo"

[[routes]]
name = "trap"
path = "/trap/{{0}}"
kind = "book-job"
plugin = "trap"

[[routes]]
name = "looper"
path = "/looper/{{0}}"
kind = "book-job"
plugin = "looper"
"#,
        booker = guests::CAPACITY_BOOKER,
        echo = guests::ECHO,
        trap = guests::TRAP,
        looper = guests::LOOPER,
    ) + &hostile_config()
}

/// The standard test config with `extra` (TOML) prepended; compiled plugins are cached
/// and versions kept outside the tree (versions in a directory of the test's own).
pub fn test_config(extra: &str) -> Config {
    let mut config = Config::parse(&config_text(extra), Path::new(".")).expect("config");
    // Servers with a runtime of their own cache compiled plugins outside the tree.
    config.cache_dir = std::env::temp_dir().join("followup-tests-cache");
    config.versions_dir = temp_dir("versions");
    config.store.path = temp_dir("store").join("followup.db");
    config
}

/// Builds the app of `config` (on the shared runtime unless it sets its own `[runtime]`).
pub async fn app(mut config: Config) -> App {
    let shared = config.runtime == RuntimeConfig::default();
    if shared {
        config.runtime = shared_runtime_config();
    }
    tokio::task::spawn_blocking(move || {
        if shared {
            App::with_runtime(&config, runtime())
        } else {
            App::new(&config)
        }
    })
    .await
    .expect("join")
    .expect("app")
}

/// A new, empty directory under the system's temporary directory.
pub fn temp_dir(label: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("followup-tests-{label}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A host serving the standard test routes on 127.0.0.1 at an ephemeral port.
pub struct Server {
    pub base: String,
    pub app: Arc<App>,
    pub client: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

impl Server {
    pub async fn start() -> Server {
        Server::with_config("").await
    }

    /// `extra` is TOML placed before the standard plugins and routes, e.g.
    /// `status_mode = "http"`. A `[runtime]` table gets the server a runtime of its own.
    pub async fn with_config(extra: &str) -> Server {
        let app = app(test_config(extra)).await;
        Server::serving(app).await
    }

    /// Serves `app` until the server is dropped.
    pub async fn serving(app: App) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let app = Arc::new(app);
        tokio::spawn(run(listener, app.clone(), async {
            let _ = stopped.await;
        }));
        Server {
            base,
            app,
            client: reqwest::Client::new(),
            _stop: stop,
        }
    }

    /// A POST of `body` as JSON with a valid token.
    pub fn request(&self, path: &str, body: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("x-access-token", token(3600))
            .body(body.to_string())
    }

    /// POSTs `body` as JSON with a valid token.
    pub async fn post(&self, path: &str, body: &str) -> Answer {
        send(self.request(path, body)).await
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        send(request).await
    }
}

/// Sends a request and reads the whole answer.
pub async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let content_type = header("content-type");
    let plugin = header("x-followup-plugin");
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        content_type,
        plugin,
        text,
        json,
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    /// The plugin version that answered (`x-followup-plugin`), if one did.
    pub plugin: String,
    pub text: String,
    pub json: Value,
}

impl Answer {
    /// The error body's `type`.
    pub fn error_type(&self) -> &str {
        self.json["type"].as_str().unwrap_or("")
    }

    /// The `path` of every `invalidParams` entry.
    pub fn invalid_paths(&self) -> Vec<String> {
        self.json["invalidParams"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| p["path"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Asserts a Standard Response Object with this status and type.
    pub fn assert_error(&self, status: u16, kind: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.error_type(), kind, "{}", self.text);
        assert_eq!(self.content_type, "application/json");
        assert_eq!(self.json["status"], status, "{}", self.text);
        assert!(self.json["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(self.json["detail"].as_str().is_some_and(|t| !t.is_empty()));
        let keys: Vec<&str> = self
            .json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for key in keys {
            assert!(
                ["type", "title", "status", "detail", "invalidParams"].contains(&key),
                "unexpected key {key} in {}",
                self.text
            );
        }
    }
}

/// An HS256-shaped JWT expiring `ttl` seconds from now (negative: already expired).
pub fn token(ttl: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"exp":{},"iat":{now},"name":"R Morales","email":"r.morales@example.com"}}"#,
        now + ttl
    ));
    format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode("signature"))
}

/// The contract's example payloads (`../shared/spec/examples`).
pub fn example(name: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/examples");
    let path: PathBuf = dir.join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn example_json(name: &str) -> Value {
    serde_json::from_str(&example(name)).unwrap()
}

/// Sets `pointer` (a JSON pointer) in `doc` to `value`.
pub fn with(mut doc: Value, pointer: &str, value: Value) -> String {
    *doc.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer}")) = value;
    doc.to_string()
}
