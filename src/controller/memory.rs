//! Keeping the process small. glibc's allocator keeps a heap per thread (up
//! to eight per core), raises its mmap threshold after large frees, and
//! keeps freed memory for reuse: after a burst of work (a cold start with
//! hundreds of devices, a batch of probes) tens of MiB would stay resident
//! for good. One heap, a fixed threshold (large buffers are mapped and
//! unmapped at once) and a trim after each burst keep a node's controller
//! flat. One heap rather than two saves about 1 MiB at 1000 PVs (BENCH.md,
//! issue 19's third round); it cost CPU while two runtime workers allocated
//! at once, which ended with the one-thread runtime (fourth round): only
//! the blocking pool's probes and wipes allocate beside it.
//! musl's allocator (the container image) has none of these habits, and
//! there these functions do nothing.

/// Tunes the allocator; call before any thread starts.
pub fn limit_allocator_caches() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Gives the memory freed after a burst of work back to the system.
pub fn return_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator's heaps.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}
