//! How the process's allocator keeps memory (glibc malloc). By default glibc gives each
//! thread that contends its own arena, up to 8 per core, and keeps what a large review
//! freed in the arena that served it; the blocking threads that run large reviews each
//! kept their own peak. Measured under the mixed hostile load of `tests/bench/run`
//! (before the review memory budget): peak RSS 161 MiB by default, 126 MiB with two
//! arenas, 99 MiB with two arenas and a fixed mmap threshold.

/// Two arenas (the async workers and the review threads rarely allocate at the same
/// instant; one would serialize every allocation), and allocations from 256 KiB up (a
/// large body, a parsed object's big arrays) mapped on their own and returned to the
/// kernel when freed. A fixed threshold also stops glibc from raising it after the first
/// large free, which moved later large blocks into the arenas for good. Malloc settings
/// given in `GLIBC_TUNABLES` win: then nothing is changed here.
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
            mallopt(M_ARENA_MAX, 2);
            mallopt(M_MMAP_THRESHOLD, 256 * 1024);
        }
    }
}
