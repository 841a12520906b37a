//! Facts about this process (or another, by pid) the metrics and the benchmark report.

/// Current resident set size, bytes (Linux `/proc/self/status` VmRSS).
pub fn rss_bytes() -> Option<u64> {
    status_kib("self", "VmRSS:").map(|kib| kib * 1024)
}

/// Peak resident set size, bytes (VmHWM).
pub fn peak_rss_bytes() -> Option<u64> {
    status_kib("self", "VmHWM:").map(|kib| kib * 1024)
}

/// Current resident set size of process `pid`, bytes (VmRSS).
pub fn rss_bytes_of(pid: u32) -> Option<u64> {
    status_kib(&pid.to_string(), "VmRSS:").map(|kib| kib * 1024)
}

/// Peak resident set size of process `pid`, bytes (VmHWM).
pub fn peak_rss_bytes_of(pid: u32) -> Option<u64> {
    status_kib(&pid.to_string(), "VmHWM:").map(|kib| kib * 1024)
}

/// A `kB` field of `/proc/<process>/status`.
fn status_kib(process: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}
