//! Files podtrace writes at a path it is given (`--output`, `--record`, `--summary`): opened
//! in one place, the same way.
//!
//! podtrace runs as root, so a path in a directory others can write (`/tmp`, a shared log
//! directory) must not let them choose what root writes to:
//!
//! - a symbolic link at the path is refused (`O_NOFOLLOW`: the error names the path, exit
//!   status 2); the directories above it are followed as usual;
//! - a file podtrace creates is mode 0600 (events and traces hold argv, which may hold
//!   secrets), whatever the umask;
//! - an existing regular file opened to be truncated is podtrace's file from then on: its
//!   mode becomes 0600 too. An existing file opened to append to keeps its mode and owner
//!   (whoever prepared it, for instance log rotation's `create MODE OWNER GROUP`, chose them
//!   for what it already holds). Devices and pipes (`/dev/null`, a FIFO) are written as they
//!   are, their mode never changed.
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::Failure;

/// The mode of the files podtrace writes.
pub const MODE: u32 = 0o600;

/// Opens `path` for writing: created 0600 if missing, truncated (and made 0600) if it is a
/// regular file and `append` is false, appended to as it is if `append`. A symbolic link at
/// `path`, or any other reason the path cannot be opened, is a [`Failure::BadInput`] naming
/// it (exit status 2).
pub fn open_output_file(path: &Path, append: bool) -> Result<File, Failure> {
    let mut opts = OpenOptions::new();
    opts.write(true)
        .create(true)
        .mode(MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    if append {
        opts.append(true);
    } else {
        opts.truncate(true);
    }
    let file = opts.open(path).map_err(|e| {
        let link = e.raw_os_error() == Some(libc::ELOOP)
            && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        Failure::BadInput(if link {
            format!(
                "{}: is a symbolic link; podtrace does not write through one (name the file \
                 itself, or remove the link)",
                path.display()
            )
        } else {
            format!("{}: cannot open for writing: {e}", path.display())
        })
    })?;
    if !append {
        let meta = file.metadata().map_err(|e| {
            Failure::BadInput(format!("{}: cannot read its mode: {e}", path.display()))
        })?;
        if meta.is_file() && meta.permissions().mode() & 0o7777 != MODE {
            file.set_permissions(std::fs::Permissions::from_mode(MODE))
                .map_err(|e| {
                    Failure::BadInput(format!("{}: cannot make it mode 0600: {e}", path.display()))
                })?;
        }
    }
    Ok(file)
}

/// Creates `path`, which must not exist (a trace segment: a file of its own, never an
/// existing one, never through a symbolic link), mode 0600. The error is the system's.
pub fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Creates directory `path` (and its parents) mode 0700 if it is not there (what it holds
/// holds argv); an existing one is used as it is.
pub fn ensure_dir(path: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(Failure::BadInput(format!(
                "{}: is not a directory",
                path.display()
            )))
        }
        Err(_) => {}
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| {
            Failure::BadInput(format!(
                "{}: cannot create the directory: {e}",
                path.display()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("metadata").permissions().mode() & 0o7777
    }

    #[test]
    fn a_symlink_at_the_path_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").expect("victim");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).expect("symlink");
        // A dangling link too: it would create the file it names.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).expect("symlink");
        for (p, append) in [(&link, false), (&link, true), (&dangling, false)] {
            let e = open_output_file(p, append).expect_err("a symlink is refused");
            let text = e.to_string();
            assert!(
                text.contains(&p.display().to_string()) && text.contains("symbolic link"),
                "{text}"
            );
            assert_eq!(e.exit_code(), crate::error::EXIT_BAD_INPUT);
        }
        assert_eq!(
            std::fs::read_to_string(&victim).expect("victim"),
            "precious"
        );
        assert!(!dir.path().join("nowhere").exists());
    }

    #[test]
    fn created_0600_truncated_made_0600_appended_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let new = dir.path().join("new");
        open_output_file(&new, false).expect("create");
        assert_eq!(mode(&new), 0o600);

        let old = dir.path().join("old");
        std::fs::write(&old, "old content").expect("old");
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let mut f = open_output_file(&old, false).expect("truncate");
        f.write_all(b"new").expect("write");
        assert_eq!(mode(&old), 0o600);
        assert_eq!(std::fs::read_to_string(&old).expect("read"), "new");

        let log = dir.path().join("log");
        std::fs::write(&log, "line 1\n").expect("log");
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let mut f = open_output_file(&log, true).expect("append");
        f.write_all(b"line 2\n").expect("write");
        assert_eq!(mode(&log), 0o640, "appended to: its mode is kept");
        assert_eq!(
            std::fs::read_to_string(&log).expect("read"),
            "line 1\nline 2\n"
        );
        let appended_new = dir.path().join("appended-new");
        open_output_file(&appended_new, true).expect("create to append");
        assert_eq!(mode(&appended_new), 0o600);
    }

    #[test]
    fn devices_are_written_as_they_are() {
        let before = mode(Path::new("/dev/null"));
        open_output_file(Path::new("/dev/null"), false).expect("/dev/null");
        assert_eq!(mode(Path::new("/dev/null")), before);
    }

    #[test]
    fn a_path_that_cannot_be_opened_is_bad_input_naming_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("no-such-dir").join("f");
        let e = open_output_file(&p, false).expect_err("no directory");
        assert!(e.to_string().contains(&p.display().to_string()), "{e}");
        assert_eq!(e.exit_code(), crate::error::EXIT_BAD_INPUT);
    }
}
