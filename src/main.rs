fn main() -> std::process::ExitCode {
    keep_large_allocations_mapped();
    keyrot::cli::main()
}

/// Large buffers (every key file's bytes while loading, the list of a plan's actions)
/// live briefly and one after another. glibc raises its mmap threshold each time such a
/// buffer is freed, after which the next ones come from the heap and their memory is
/// kept when freed; fixing the threshold at glibc's default (128 KiB) hands each back.
/// Measured on a plan of 100,000 keys: peak memory 201 -> 189 MB, time unchanged within
/// the noise (BENCHMARKS.md).
fn keep_large_allocations_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter, before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
