//! Files and directories that hold PHI or keys (the SQLite database and its `-wal`/`-shm`,
//! the generated at-rest key, the outbox sink): owner-only whatever the process umask.
//! Directories we create are 0700 and files 0600, set explicitly after creation (the umask
//! only ever removes bits, and an odd umask could remove the owner's own).

use std::io;
use std::path::Path;

/// Owner-only directory mode.
pub const DIR_MODE: u32 = 0o700;
/// Owner-only file mode.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) owner-only. An existing directory is left as it is,
/// with a warning when others may read it: it may be shared on purpose, and a chmod of a
/// directory we did not create (as root, `/tmp`) could break the host.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            warn_if_open(dir, &meta);
            return Ok(());
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a directory", dir.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        private_dir(parent)?;
    }
    match create_dir(dir) {
        Ok(()) => set_mode(dir, DIR_MODE),
        // Another process (a second daemon on the same data dir) made it first.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes an existing file owner-only (no-op when absent).
pub fn restrict_file(path: &Path) -> io::Result<()> {
    match set_mode(path, FILE_MODE) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Creates (or truncates) a file owner-only and writes `bytes` to it.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut file = open_private(path, false)?;
    file.write_all(bytes)
}

/// Creates a new file owner-only (`AlreadyExists` when it exists), synced to disk.
pub fn create_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut file = open_private(path, true)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(unix)]
fn open_private(path: &Path, new: bool) -> io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(!new)
        .create_new(new)
        .truncate(!new)
        .mode(FILE_MODE)
        .open(path)?;
    // The mode above is masked by the umask, and an existing file keeps its own: set it.
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

#[cfg(not(unix))]
fn open_private(path: &Path, new: bool) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(!new)
        .create_new(new)
        .truncate(!new)
        .open(path)
}

#[cfg(unix)]
fn create_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(DIR_MODE).create(dir)
}

#[cfg(not(unix))]
fn create_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir(dir)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn warn_if_open(dir: &Path, meta: &std::fs::Metadata) {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %dir.display(),
            mode = format!("{mode:o}"),
            "a directory holding PHI or keys is open to other users; chmod 700 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_open(_dir: &Path, _meta: &std::fs::Metadata) {}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn created_owner_only() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("a/b");
        private_dir(&dir).expect("dir");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        let file = dir.join("f");
        write_private(&file, b"x").expect("write");
        assert_eq!(mode(&file), 0o600);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_private(&file, b"y").expect("rewrite");
        assert_eq!(mode(&file), 0o600);
        assert!(create_private(&file, b"z").is_err());
    }
}

/// When run as root (an operator's admin command on the host) on a state directory owned by
/// the service user, hands a file root just created there to that user, so the service can
/// still open it (a database `switchboard keys create` made before the first start, say).
/// Anything else is left as it is.
pub fn give_to_dir_owner(path: &Path, dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let dir = match std::fs::metadata(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let file = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if dir.uid() != 0 && file.uid() == 0 && file.is_file() {
        std::os::unix::fs::chown(path, Some(dir.uid()), Some(dir.gid()))?;
    }
    Ok(())
}
