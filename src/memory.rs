//! Handing freed heap memory back to the operating system.
//!
//! glibc's allocator keeps what a program frees in its arenas (one per thread that allocated)
//! and returns only the top of each heap. A long-lived process whose allocations churn, like
//! the operator reading 10,000 jobs a page at a time on every resync, ends with its resident
//! size well above what it holds: measured at 5,000 jobs, 8.6 MB in use of 19 MB taken, and
//! `malloc_trim(0)` lowered the anonymous RSS from 21.7 to 14.7 MiB. [`trim`] asks glibc to
//! release every whole free page of every arena; elsewhere (musl, macOS) it does nothing.
//!
//! Deliberately not a different global allocator: glibc's is what ferry's figures were
//! measured with, and one call after each resync pass addresses the one churn that matters.

/// Returns every whole free page of the allocator's arenas to the OS (glibc); a no-op elsewhere.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and is thread-safe: it locks each arena in turn.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// The process's anonymous resident memory, in KiB.
    fn rss_anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("RssAnon")
    }

    #[test]
    fn trimming_returns_freed_heap_pages_that_glibc_would_keep() {
        // 64 MiB in 1 KiB blocks, all touched; keep every 64th so no heap top can shrink on
        // its own, then free the rest: glibc keeps those pages resident until trimmed.
        let mut blocks: Vec<Vec<u8>> = (0..65_536).map(|i| vec![i as u8; 1024]).collect();
        let kept: Vec<Vec<u8>> = blocks.iter_mut().step_by(64).map(std::mem::take).collect();
        drop(blocks);
        let before = rss_anon_kib();
        trim();
        let after = rss_anon_kib();
        assert!(
            before.saturating_sub(after) >= 32 * 1024,
            "trim released {} KiB of ~63 MiB freed ({before} -> {after} KiB)",
            before.saturating_sub(after)
        );
        assert_eq!(kept.len(), 1024);
        assert!(kept.iter().enumerate().all(|(i, b)| b[0] == (i * 64) as u8));
    }
}
