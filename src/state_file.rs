//! keyrot's own files under `.git/keyrot/` (the apply lock and the journals), opened
//! the way the store's files are read: never through a symbolic link, never waiting on
//! a FIFO or a device, and refused unless they are regular files. Whoever can put
//! something there cannot make apply hang while it holds the lock, nor write elsewhere.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Most a state file may hold: journals name keys and fingerprints, a line each.
const MAX_BYTES: u64 = 256 * 1024 * 1024;

fn not_regular() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "is not a regular file (keyrot's state files are; remove it if no keyrot is running)",
    )
}

/// Opens without following a symbolic link and without blocking, then checks what
/// was opened.
fn open_checked(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    let file = options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => io::Error::new(io::ErrorKind::InvalidData, "is a symbolic link"),
            _ => e,
        })?;
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

/// The file's bytes, or `None` when there is no file.
pub(crate) fn read(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = match open_checked(OpenOptions::new().read(true), path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "is too large"));
    }
    Ok(Some(bytes))
}

/// Opens an existing regular file for appending.
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    open_checked(OpenOptions::new().append(true), path)
}

/// Creates the file anew (mode 0600), replacing whatever had its name: a symbolic
/// link there is removed, not followed.
pub(crate) fn create(path: &Path) -> io::Result<File> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    open_checked(OpenOptions::new().write(true).create_new(true).mode(0o600), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifos_symlinks_and_folders_are_refused_without_blocking() {
        let tmp = tempfile::TempDir::new().unwrap();
        let fifo = tmp.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        assert!(read(&fifo)
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
        assert!(open_append(&fifo).is_err());

        let target = tmp.path().join("target");
        fs::write(&target, "x").unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(read(&link).unwrap_err().to_string().contains("symbolic link"));
        // Creating over a link replaces the link; the file it pointed to is untouched.
        create(&link).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"x");
        assert!(fs::symlink_metadata(&link).unwrap().is_file());

        assert!(read(tmp.path()).is_err());
        assert_eq!(read(&tmp.path().join("absent")).unwrap(), None);
        assert_eq!(read(&target).unwrap(), Some(b"x".to_vec()));
    }
}
