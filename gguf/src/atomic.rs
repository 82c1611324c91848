//! Writing a file so that nobody ever sees half of it: the bytes go to a temporary file in
//! the destination's folder (named `.loupe-WHAT-XXXXXX.tmp`, so a leftover is easy to
//! recognise), which is synced and renamed over the destination only once complete. A
//! write that fails or is dropped removes its temporary file and leaves the destination
//! as it was. Every file loupe writes goes through here.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// A file being written in place of `path`; it becomes `path` on [`AtomicFile::commit`].
pub struct AtomicFile {
    path: PathBuf,
    tmp: tempfile::NamedTempFile,
}

impl AtomicFile {
    /// Start writing `path`; `what` names the writer in the temporary file's name
    /// ("quantize", "session").
    pub fn create(path: &Path, what: &str) -> io::Result<AtomicFile> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".loupe-{what}-"))
            .suffix(".tmp")
            .tempfile_in(dir)?;
        Ok(AtomicFile {
            path: path.to_path_buf(),
            tmp,
        })
    }

    /// The destination.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the bytes are until the commit (to read them back first, say).
    pub fn temp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// The temporary file.
    pub fn file(&self) -> &File {
        self.tmp.as_file()
    }

    /// A buffered writer into the temporary file; flush it before committing.
    pub fn writer(&self) -> BufWriter<&File> {
        BufWriter::with_capacity(1 << 20, self.tmp.as_file())
    }

    /// Sync the bytes to disk and rename the file over the destination.
    pub fn commit(self) -> io::Result<()> {
        self.tmp.as_file().sync_all()?;
        self.tmp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Write `bytes` to `path` atomically.
pub fn write_atomically(path: &Path, what: &str, bytes: &[u8]) -> io::Result<()> {
    let f = AtomicFile::create(path, what)?;
    let mut w = f.writer();
    w.write_all(bytes)?;
    w.flush()?;
    drop(w);
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_destination_changes_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        std::fs::write(&path, b"old").unwrap();
        let f = AtomicFile::create(&path, "test").unwrap();
        let mut w = f.writer();
        w.write_all(b"new bytes").unwrap();
        w.flush().unwrap();
        drop(w);
        let tmp = f.temp_path().to_path_buf();
        let name = tmp.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(".loupe-test-") && name.ends_with(".tmp"),
            "{name}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        f.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new bytes");
        assert!(!tmp.exists());

        // Dropped before the commit: no trace, the destination untouched.
        let f = AtomicFile::create(&path, "test").unwrap();
        let tmp = f.temp_path().to_path_buf();
        drop(f);
        assert!(!tmp.exists());
        assert_eq!(std::fs::read(&path).unwrap(), b"new bytes");
        write_atomically(&path, "test", b"third").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"third");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
