//! The descriptor limit: raised to the hard limit at start-up, and the default cap on
//! client connections derived from it.

/// Descriptors kept out of the client-connection cap: upstream connections, the listener,
/// credential and log files, the runtime's own.
const RESERVED: u64 = 128;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns (before, after).
pub fn raise() -> std::io::Result<(u64, u64)> {
    let (soft, _) = rlimit::Resource::NOFILE.get()?;
    let raised = rlimit::increase_nofile_limit(u64::MAX)?;
    Ok((soft, raised))
}

/// The soft `RLIMIT_NOFILE` of this process now.
pub fn current() -> std::io::Result<u64> {
    Ok(rlimit::Resource::NOFILE.get()?.0)
}

/// The default `--max-client-connections` for a descriptor limit: what is left after the
/// reserve and the upstream pool, at least 16.
pub fn default_max_connections(nofile: u64, upstream_connections: usize) -> usize {
    let left = nofile
        .saturating_sub(RESERVED)
        .saturating_sub(upstream_connections as u64);
    usize::try_from(left).unwrap_or(usize::MAX).max(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_leaves_room_for_upstream_and_files() {
        assert_eq!(default_max_connections(1024, 64), 832);
        assert_eq!(default_max_connections(100, 64), 16);
        assert!(default_max_connections(u64::MAX, 64) > 1_000_000);
    }
}
