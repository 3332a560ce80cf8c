//! Compiled components: in memory by content hash, and (with a directory) as precompiled
//! artefacts on disk, so that a redeploy, a rollback or a restart skips compilation. The
//! one place that turns bytes back into compiled code, with both `unsafe` blocks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The compile cache of one runtime.
#[derive(Debug, Default)]
pub struct CompileCache {
    /// Components compiled so far, by content hash: loading the same bytes twice (a
    /// rollback, a redeploy, a second host in tests) skips compilation.
    compiled: Mutex<HashMap<String, Component>>,
    /// Precompiled artefacts on disk, so that a restart skips compilation too.
    dir: Option<std::path::PathBuf>,
    /// Components compiled, and components loaded from the disk cache instead.
    compiles: AtomicU64,
    cache_hits: AtomicU64,
    memory_hits: AtomicU64,
}

impl CompileCache {
    /// A cache in memory, and in `dir` when given (created by the caller).
    pub fn new(dir: Option<std::path::PathBuf>) -> Self {
        CompileCache {
            dir,
            ..CompileCache::default()
        }
    }

    /// Components compiled since start, and components loaded from the disk cache.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.compiles.load(Ordering::Relaxed),
            self.cache_hits.load(Ordering::Relaxed),
        )
    }

    /// Appends the compile counters in the Prometheus text format to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP followup_component_loads_total Components made ready, by source: compiled, \
             the disk cache, or already in memory.\n\
             # TYPE followup_component_loads_total counter"
        );
        for (source, counter) in [
            ("compiled", &self.compiles),
            ("disk-cache", &self.cache_hits),
            ("memory", &self.memory_hits),
        ] {
            let _ = writeln!(
                out,
                "followup_component_loads_total{{source=\"{source}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
    }

    /// Compiles `bytes` (known by `hash`), or returns the component compiled earlier, in
    /// this process or (with a cache directory) by an earlier run.
    pub fn compile(
        &self,
        engine: &Engine,
        hash: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<Component> {
        if let Some(c) = lock(&self.compiled).get(hash) {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(c.clone());
        }
        let cached = self
            .dir
            .as_deref()
            .and_then(|dir| self.load_cached(engine, dir, hash));
        let component = match cached {
            Some(component) => {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                component
            }
            None => {
                // Compile outside the lock: it takes ~100 ms per 250 KB on 2 cores.
                let artefact = engine.precompile_component(bytes)?;
                self.compiles.fetch_add(1, Ordering::Relaxed);
                if let Some(dir) = &self.dir {
                    self.store_cached(engine, dir, hash, &artefact);
                }
                deserialize(engine, &artefact)?
            }
        };
        let mut cache = lock(&self.compiled);
        if cache.len() >= MAX_CACHED_COMPONENTS {
            cache.clear();
        }
        cache.insert(hash.to_string(), component.clone());
        Ok(component)
    }

    /// Where the artefact of component `hash` for this engine lives: the engine's
    /// compatibility hash is part of the name, so a wasmtime or config change misses.
    fn cache_path(engine: &Engine, dir: &std::path::Path, hash: &str) -> std::path::PathBuf {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        dir.join(format!("{hash}-{:016x}.cwasm", h.finish()))
    }

    /// A cached artefact, if present and intact; a damaged one is removed (and then
    /// recompiled), never loaded.
    ///
    /// The artefact is checked against the CRC-32 written beside it, then mapped from the
    /// file rather than read and copied: with 100 plugins, start-up is mostly this. The
    /// checksum guards against damage (a disk error, a stray write); artefacts are only
    /// ever replaced whole, by rename, so the file mapped is the file checked. It is no
    /// defence against someone who can write the cache, who could rewrite any digest too.
    fn load_cached(&self, engine: &Engine, dir: &std::path::Path, hash: &str) -> Option<Component> {
        let path = Self::cache_path(engine, dir, hash);
        let file = std::fs::File::open(&path).ok()?;
        let recorded = std::fs::read_to_string(path.with_extension("crc32")).ok();
        let intact = recorded.as_deref().map(str::trim) == checksum(file).ok().as_deref();
        let component = if intact {
            deserialize_file(engine, &path).ok()
        } else {
            None
        };
        if component.is_none() {
            tracing::warn!(path = %path.display(), "cached artefact is damaged or stale; recompiling");
            let _ = std::fs::remove_file(&path);
        }
        component
    }

    /// Writes an artefact and its checksum, each whole or not at all. Failing to cache
    /// only costs the next start a compile.
    fn store_cached(&self, engine: &Engine, dir: &std::path::Path, hash: &str, artefact: &[u8]) {
        let path = Self::cache_path(engine, dir, hash);
        let write = crate::files::write_atomically;
        let sum = format!("{:08x}", crc32fast::hash(artefact));
        let written = write(&path, artefact)
            .and_then(|()| write(&path.with_extension("crc32"), sum.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), "cannot cache the compiled plugin: {e}");
        }
    }
}

/// Loads an artefact this host's engine produced.
#[allow(
    unsafe_code,
    reason = "wasmtime cannot check compiled code: only artefacts this engine wrote get here"
)]
fn deserialize(engine: &Engine, artefact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `artefact` comes from `Engine::precompile_component` of this very engine.
    unsafe { Component::deserialize(engine, artefact) }
}

/// Maps an artefact this host's engine wrote to the cache.
#[allow(
    unsafe_code,
    reason = "wasmtime cannot check compiled code: only artefacts this engine wrote, checked against their checksum, get here"
)]
fn deserialize_file(engine: &Engine, path: &std::path::Path) -> wasmtime::Result<Component> {
    // SAFETY: the file was written (whole, by rename) from `Engine::precompile_component`
    // of an engine with the same compatibility hash (part of its name), and its CRC-32
    // matched just now. Cache files are never modified in place while mapped.
    unsafe { Component::deserialize_file(engine, path) }
}

/// The CRC-32 of a file in hex, read in pieces (never held whole).
fn checksum(mut file: std::fs::File) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut hasher = crc32fast::Hasher::new();
    let mut piece = vec![0u8; 64 << 10];
    loop {
        match file.read(&mut piece)? {
            0 => return Ok(format!("{:08x}", hasher.finalize())),
            n => hasher.update(&piece[..n]),
        }
    }
}

/// Bound on compiled components kept in memory; past it the cache starts over.
const MAX_CACHED_COMPONENTS: usize = 64;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // What the mutex guards holds no invariant a panicking holder could break.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
