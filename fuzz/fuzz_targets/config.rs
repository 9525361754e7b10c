//! The `pocket.toml` loader: the binary's own `src/config.rs`, compiled into this target
//! (the `pocket` package has no library target, so the module is included by path rather
//! than exposed). Each input is written to a file and loaded with `Config::load`, the same
//! call `pocket run/serve/worker --config` makes: TOML parsing, serde with the key path, and
//! every section's validation. Errors are expected; a panic is a bug.
#![no_main]
#![allow(dead_code, unreachable_pub, missing_docs)]

#[path = "../../src/config.rs"]
mod config;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn path() -> &'static std::path::Path {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("pocket-fuzz-config-{}.toml", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    if std::fs::write(path(), data).is_err() {
        return;
    }
    match config::Config::load(path()) {
        Ok(config) => {
            // What the binary derives from a loaded config must not panic either.
            let _ = config.cluster.store_options();
            let _ = config.cluster.scale_policy();
            for name in config.agents.keys() {
                let _ = config.resilience.protected_policy(name);
            }
            for (name, server) in &config.mcp {
                let _ = server.validate(name);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
