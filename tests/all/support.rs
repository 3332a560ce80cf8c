//! Shared test support: one plugin runtime per test process, servers on 127.0.0.1:0, and
//! tokens and payloads.

use followup_host::config::RuntimeConfig;
use followup_host::config::{Config, Limits, PluginManifest, RouteConfig};
use followup_host::runtime::PluginRuntime;
use followup_host::{App, run};
use followup_tests::guests;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use tokio::sync::oneshot;

pub use followup_tests::configs::{example_booker, hostile, served};
pub use followup_tests::http::{Answer, example, example_json, send, token, with};

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

/// The plugins and routes every test server has, after those `config` has.
pub fn standard(config: Config) -> Config {
    let mut config = config
        .with_plugin("capacity-booker", example_booker())
        .with_plugin("echo", PluginManifest::new(guests::ECHO))
        .with_plugin("trap", PluginManifest::new(guests::TRAP))
        .with_plugin(
            "looper",
            PluginManifest::new(guests::LOOPER).with_limits(Limits {
                timeout_ms: 200,
                ..Limits::default()
            }),
        )
        .with_route(
            RouteConfig::book_job("/workorders/{0}/followup", "capacity-booker").named("followup"),
        )
        .with_route(
            RouteConfig::appointment_search("/appointments/search", "capacity-booker")
                .named("appointments"),
        )
        .with_route(RouteConfig::book_job("/echo/{0}", "echo").named("echo"))
        .with_route(RouteConfig::book_job("/trap/{0}", "trap").named("trap"))
        .with_route(RouteConfig::book_job("/looper/{0}", "looper").named("looper"));
    for behaviour in HOSTILE {
        // The 50 MB answer needs room to be built (the default 64 MiB would stop it first)
        // and time: building, copying and measuring 50 MB takes a few hundred ms.
        let (max_memory_bytes, timeout_ms) = match *behaviour {
            "huge-response" => (128 << 20, HUGE_RESPONSE_TIMEOUT_MS),
            // The bomb reaches its cap well inside the deadline even with the other tests
            // taking both cores (faulting in 64 MiB did not always).
            "memory-bomb" => (16 << 20, HOSTILE_TIMEOUT_MS),
            _ => (64 << 20, HOSTILE_TIMEOUT_MS),
        };
        let name = format!("hostile-{behaviour}");
        config = config
            .with_plugin(
                &name,
                hostile(
                    behaviour,
                    Limits {
                        timeout_ms,
                        max_memory_bytes,
                        ..Limits::default()
                    },
                ),
            )
            .with_route(RouteConfig::book_job(
                format!("/hostile/{behaviour}/{{0}}"),
                &name,
            ));
    }
    config
}

/// The standard test config after `extra` (TOML: the settings under test, plugins and
/// routes of the test's own); see [`test_config_of`].
pub fn test_config(extra: &str) -> Config {
    test_config_of(toml::from_str(extra).expect("the test's settings"))
}

/// `config` with the standard plugins and routes, checked; compiled plugins are cached
/// and versions kept outside the tree (versions and store in directories of the test's own).
pub fn test_config_of(config: Config) -> Config {
    let mut config = standard(config).checked().expect("config");
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

    /// The standard test server after `config` (built with `followup_host::config::build`):
    /// its settings, plugins and routes come first.
    pub async fn of(config: Config) -> Server {
        Server::serving(app(test_config_of(config)).await).await
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
