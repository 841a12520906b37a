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

/// The anonymous part of process `pid`'s resident set, bytes (RssAnon): its heap, stacks and
/// relocated data, without the pages of code and read-only data mapped from its files.
pub fn anon_rss_bytes_of(pid: u32) -> Option<u64> {
    status_kib(&pid.to_string(), "RssAnon:").map(|kib| kib * 1024)
}

/// Peak resident set size of process `pid`, bytes (VmHWM).
pub fn peak_rss_bytes_of(pid: u32) -> Option<u64> {
    status_kib(&pid.to_string(), "VmHWM:").map(|kib| kib * 1024)
}

/// CPU time process `pid` has used so far (user + system), from `/proc/<pid>/stat`.
pub fn cpu_time_of(pid: u32) -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses (which may hold spaces): state is field 3, utime
    // and stime fields 14 and 15, in clock ticks.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a constant of the running system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|t| *t > 0)?;
    Some(std::time::Duration::from_secs_f64(
        (utime + stime) as f64 / ticks as f64,
    ))
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
