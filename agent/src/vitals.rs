//! What the agent reports about its machine: OS, architecture, host name,
//! uptime and free disk space of the file systems it cares about.

use std::path::Path;
use std::time::Instant;

use rm_bus::msg::DiskFree;

pub fn os() -> String {
    std::env::consts::OS.to_owned()
}

pub fn arch() -> String {
    std::env::consts::ARCH.to_owned()
}

/// The machine's host name (what restic records as the snapshot host).
pub fn hostname() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname writes at
        // most that many bytes.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            let name = String::from_utf8_lossy(&buf[..end]).trim().to_owned();
            if !name.is_empty() {
                return name;
            }
        }
    }
    std::env::var("COMPUTERNAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Seconds since boot where the OS tells (Linux), else since `started`.
pub fn uptime_secs(started: Instant) -> u64 {
    #[cfg(target_os = "linux")]
    if let Some(secs) = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .and_then(|s| s.parse::<f64>().ok())
    {
        return secs as u64;
    }
    started.elapsed().as_secs()
}

/// Free and total bytes of the file system holding `path`.
pub fn disk_free(path: &Path) -> Option<DiskFree> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
        // SAFETY: zeroed statvfs is a valid out-parameter; `c` is a valid
        // NUL-terminated path for the duration of the call.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
        if rc != 0 {
            return None;
        }
        #[allow(clippy::unnecessary_cast)]
        let frsize = st.f_frsize as u64;
        #[allow(clippy::unnecessary_cast)]
        Some(DiskFree {
            path: path.display().to_string(),
            free_bytes: (st.f_bavail as u64).saturating_mul(frsize),
            total_bytes: Some((st.f_blocks as u64).saturating_mul(frsize)),
        })
    }
    // Windows: GetDiskFreeSpaceExW would go here; not compiled on this
    // project's machines, so the agent reports no disks there for now.
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vitals_are_plausible() {
        assert!(!hostname().is_empty());
        assert!(!os().is_empty() && !arch().is_empty());
        let d = disk_free(Path::new("/")).expect("statvfs of /");
        assert!(d.total_bytes.unwrap() >= d.free_bytes && d.total_bytes.unwrap() > 0);
        assert!(disk_free(Path::new("/definitely/not/here")).is_none());
    }
}
