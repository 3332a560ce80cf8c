//! Files the host writes for itself (compiled plugins, kept versions, their journal):
//! written whole or not at all.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` through a synced temporary file and a rename, so a reader (or
/// a restart after a crash) sees the old file or the new one, never part of it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}
