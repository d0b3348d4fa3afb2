//! Handing freed heap back to the operating system between poll cycles.
//!
//! Each cycle allocates and frees a few hundred KiB (response bodies, parsed listings,
//! Cedar requests). glibc keeps freed memory in its arenas, and once the free space is
//! scattered between live allocations it cannot shrink the heap: resident memory then
//! creeps up for the first ten or so minutes of a run and stays there, although the live
//! heap does not grow (measured: docs/performance.md, "Memory over time"). Asking glibc to
//! return every free whole page after a cycle keeps RSS equal to what the daemon uses.
//! Other C libraries (musl) and other systems return memory without being asked, so there
//! this is a no-op.

/// Returns free pages of every malloc arena to the kernel. True when some memory was
/// released. Costs a walk over the allocator's free lists once per cycle; the idle bench
/// measured no difference with it (0.040% of a core).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() -> bool {
    // SAFETY: the crate's one unsafe block. `malloc_trim` takes an integer (bytes to leave
    // at the top of the heap), touches only the allocator's own state under the
    // allocator's own locks, and may be called from any thread at any time; no pointer or
    // Rust-owned memory crosses the call.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Elsewhere the allocator returns memory by itself.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_pages_are_returned() {
        // Scatter live allocations between freed ones, the pattern glibc cannot trim by
        // itself, then check that RSS falls when asked.
        let mut keep = Vec::new();
        let mut drop_later = Vec::new();
        for i in 0..4096 {
            let v = vec![i as u8; 16 * 1024];
            if i % 64 == 0 {
                keep.push(v);
            } else {
                drop_later.push(v);
            }
        }
        drop(drop_later);
        let before = rss_kib();
        assert!(release_free_memory(), "nothing was released");
        let after = rss_kib();
        assert!(
            after + 16 * 1024 < before,
            "RSS {before} KiB -> {after} KiB: less than 16 MiB returned"
        );
        assert_eq!(keep.len(), 64);
        assert!(keep.iter().enumerate().all(|(i, v)| v[0] == (i * 64) as u8));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0)
    }
}
