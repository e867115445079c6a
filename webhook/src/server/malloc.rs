//! How the process's allocator keeps memory (glibc malloc). By default glibc gives each
//! thread that contends its own arena, up to 8 per core, and keeps what a large review
//! freed in the arena that served it; the blocking threads that run large reviews each
//! kept their own peak. Measured under the mixed hostile load of `tests/bench/run` (peak
//! RSS, 10 s runs, `GLIBC_TUNABLES` on the same build): 161 MiB by default, 126 MiB with
//! two arenas, 137 MiB with a fixed mmap threshold; with the review memory budget, 99 MiB
//! with two arenas and the threshold, 66 MiB with one arena and the threshold (and the
//! normal reviews' p99 beside it unchanged).

/// One arena: small allocations come from each thread's cache (tcache) without the lock,
/// and at 2 cores the lock is rarely contended (p99 at 2,000 reviews/s measured within
/// noise of the default). Allocations from 256 KiB up (a large body, a parsed object's
/// big arrays) are mapped on their own and returned to the kernel when freed; a fixed
/// threshold also stops glibc from raising it after the first large free, which moved
/// later large blocks into the arena for good. Malloc settings given in `GLIBC_TUNABLES`
/// win: then nothing is changed here.
#[allow(unsafe_code)] // the one FFI call; see SAFETY below
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if !std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.")) {
        const M_MMAP_THRESHOLD: i32 = -3;
        const M_ARENA_MAX: i32 = -8;
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: mallopt only sets glibc's malloc parameters; it is safe to call at any
        // time, from any thread.
        unsafe {
            mallopt(M_ARENA_MAX, 1);
            mallopt(M_MMAP_THRESHOLD, 256 * 1024);
        }
    }
}
