//! Replacing a file so that a crash leaves either the old content or the new, never a mix.
//!
//! In: a path and what to write. Out: the file replaced: the content goes to `PATH.tmp`, which is
//! fsynced, renamed over `PATH`, and the directory fsynced so the rename itself survives a crash.
//! Every file mongoferry rewrites whole (checkpoints, the job history, a journal's manifest, an
//! export) goes through here.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Replaces `path` with what `fill` writes; `io_error` turns the file system's errors into the
/// caller's. Nothing replaces `path` unless `fill` succeeds.
pub fn write_atomic<T, E>(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> Result<T, E>,
    io_error: impl Fn(io::Error) -> E,
) -> Result<T, E> {
    let tmp = tmp_path(path);
    let mut out = BufWriter::with_capacity(256 * 1024, File::create(&tmp).map_err(&io_error)?);
    let filled = fill(&mut out);
    let finished = filled.and_then(|value| {
        let file = out.into_inner().map_err(|e| io_error(e.into_error()))?;
        file.sync_all().map_err(&io_error)?;
        Ok(value)
    });
    let value = match finished {
        Ok(value) => value,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, path).map_err(&io_error)?;
    sync_dir(parent(path)).map_err(&io_error)?;
    Ok(value)
}

/// [`write_atomic`] of bytes already in hand.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic(path, |out| out.write_all(bytes), |e| e)
}

/// Makes a directory's entries (a rename, a new file) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `PATH.tmp`: beside the file, so the rename stays within one file system.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        write_bytes_atomic(&path, b"one").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        write_bytes_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let failed: Result<(), io::Error> = write_atomic(
            &path,
            |out| {
                out.write_all(b"half")?;
                Err(io::Error::other("the writer failed"))
            },
            |e| e,
        );
        assert!(failed.is_err());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"two",
            "the old content stays"
        );
        assert!(!tmp_path(&path).exists(), "no temporary file left");
    }
}
