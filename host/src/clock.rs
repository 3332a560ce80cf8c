//! The wall clock as the host records it: Unix seconds, for journal records, version
//! history lines, token checks and minted tokens.

/// Unix seconds now; 0 on a clock set before 1970.
pub fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix milliseconds now; 0 on a clock set before 1970.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
