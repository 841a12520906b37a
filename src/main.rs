//! The `switchboard` binary: the command line (`cli`), which hands over to the library.
//! `anyhow` lives here only.

mod cli;

fn main() -> std::process::ExitCode {
    large_buffers_from_the_os();
    cli::main()
}

/// Buffers of 256 KiB and more (attachments: megabytes each, short-lived) are mapped from the
/// OS and unmapped when freed. glibc's default raises its mmap threshold after the first such
/// free, so later megabyte buffers come from the heap arenas, which keep them: the daemon's
/// resident memory then stays near the peak of every arena at once. `MALLOC_MMAP_THRESHOLD_`
/// in the environment still wins.
fn large_buffers_from_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only changes allocator parameters; called before any other thread.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        }
    }
}
