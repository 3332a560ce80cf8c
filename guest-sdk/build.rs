//! Embeds the WIT package into the `export_plugin!` machinery so that a plugin crate needs
//! no copy of the WIT files, and records the package version the SDK was built against.

use std::{env, fs, path::PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let wit_path = manifest.join("../wit/booking.wit");
    println!("cargo:rerun-if-changed={}", wit_path.display());
    let wit = fs::read_to_string(&wit_path).expect("guest-sdk needs ../wit/booking.wit");
    assert!(!wit.contains("\"###"), "booking.wit must not contain \"###");

    let version = wit
        .lines()
        .find_map(|l| l.trim().strip_prefix("package servicemobility:booking@"))
        .and_then(|rest| rest.strip_suffix(';'))
        .expect("booking.wit declares `package servicemobility:booking@X.Y.Z;`")
        .to_string();

    let types = format!("servicemobility:booking/types@{version}");
    let log = format!("servicemobility:booking/log@{version}");
    let config = format!("servicemobility:booking/config@{version}");
    let kv = format!("servicemobility:booking/kv@{version}");
    let generated = format!(
        r####"
/// The version of the `servicemobility:booking` WIT package this SDK implements.
pub const WIT_VERSION: &str = "{version}";

#[doc(hidden)]
pub const __WIT_VERSION_BYTES: [u8; {len}] = *b"{version}";

#[doc(hidden)]
#[macro_export]
macro_rules! __followup_world {{
    ($world:tt) => {{
        $crate::__wit_bindgen::generate!({{
            inline: r###"{wit}"###,
            world: $world,
            runtime_path: "::followup_sdk::__wit_bindgen::rt",
            with: {{
                "{types}": ::followup_sdk::types,
                "{log}": ::followup_sdk::__bindings::servicemobility::booking::log,
                "{config}": ::followup_sdk::__bindings::servicemobility::booking::config,
                "{kv}": ::followup_sdk::__bindings::servicemobility::booking::kv,
            }},
        }});
    }};
}}
"####,
        len = version.len(),
    );
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("world.rs");
    fs::write(out, generated).expect("write OUT_DIR/world.rs");
}
