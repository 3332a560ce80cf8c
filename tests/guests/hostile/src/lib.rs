//! Test guest: one hostile behaviour per plugin, chosen by the operator's `behaviour`
//! config value, so each behaviour is its own plugin in the test host. Behaviours that the
//! sandbox denies (files, env, sockets) answer what the guest saw as an `internal` error,
//! so the tests can check that the attempt failed inside the guest.

use followup_sdk::*;

pub struct Hostile;

fn recurse(depth: u64) -> u64 {
    // Enough work per frame that the call cannot become a loop.
    std::hint::black_box(depth);
    if depth == u64::MAX {
        depth
    } else {
        recurse(depth + 1).wrapping_add(1)
    }
}

fn seen(what: String) -> Result<BookJobResponse, BookingError> {
    Err(BookingError::internal(what))
}

impl BookingPlugin for Hostile {
    fn book(_ctx: RequestContext, _job: BookJob) -> Result<BookJobResponse, BookingError> {
        let behaviour = config::get("behaviour").unwrap_or_default();
        match behaviour.as_str() {
            "loop" => loop {
                std::hint::black_box(());
            },
            "host-call-loop" => loop {
                // The import itself: the SDK's `config::get` answers from its cache.
                std::hint::black_box(__bindings::servicemobility::booking::config::get(
                    "behaviour",
                ));
            },
            "sleep" => {
                // Blocks inside a host call (wasi:clocks poll), where no epoch check runs.
                std::thread::sleep(std::time::Duration::from_secs(3600));
                seen("woke up".into())
            }
            "memory-bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recursion" => seen(format!("returned {}", recurse(0))),
            "panic" => panic!("booking rule bug"),
            "unreachable" => {
                #[cfg(target_arch = "wasm32")]
                core::arch::wasm32::unreachable();
                #[cfg(not(target_arch = "wasm32"))]
                unreachable!()
            }
            "huge-response" => {
                let mut order_num = String::with_capacity(50 << 20);
                order_num.extend(std::iter::repeat_n('9', 50 << 20));
                Ok(BookJobResponse {
                    order_num,
                    ordered_parts: vec![],
                })
            }
            "log-flood" => {
                for i in 0..3_000 {
                    println!("line {i} of a log flood");
                    log::info("and one through the log service");
                }
                Ok(BookJobResponse {
                    order_num: "FU-FLOOD".into(),
                    ordered_parts: vec![],
                })
            }
            "read-file" => match std::fs::read("/etc/passwd") {
                Ok(bytes) => seen(format!("read {} bytes", bytes.len())),
                Err(e) => seen(format!("denied: {e}")),
            },
            "read-env" => {
                let vars = std::env::vars().count();
                let args = std::env::args().count();
                let cwd = std::env::current_dir().is_ok();
                seen(format!("env vars {vars}, args {args}, cwd {cwd}"))
            }
            "open-socket" => {
                let target = config::get("socket").unwrap_or_else(|| "127.0.0.1:9".into());
                match std::net::TcpStream::connect(target.as_str()) {
                    Ok(_) => seen(format!("connected to {target}")),
                    Err(e) => seen(format!("denied: {e}")),
                }
            }
            // Not hostile: a slow, well-behaved rule, for hot-swap tests.
            "slow" => {
                let millis = config::get_or("sleep_ms", 300u64);
                std::thread::sleep(std::time::Duration::from_millis(millis));
                let tag = config::get("tag").unwrap_or_default();
                Ok(BookJobResponse {
                    order_num: format!("SLOW-{tag}"),
                    ordered_parts: vec![],
                })
            }
            other => seen(format!("unknown behaviour {other:?}")),
        }
    }
}

followup_sdk::export_plugin!(Hostile: book);
