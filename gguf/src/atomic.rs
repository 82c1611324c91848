//! Writing a file so that nobody ever sees half of it and no write loses what was there.
//! Every file loupe writes goes through here.
//!
//! - The bytes go to a temporary file in the destination's folder, named
//!   `.loupe-WHAT-PID-XXXXXX.tmp` (the writer and its process id), which is synced and
//!   renamed over the destination only once complete. A write that fails or is dropped
//!   removes it and leaves the destination as it was.
//! - The destination is checked before the write starts and again just before the rename
//!   ([`check_destination`]): only a missing path or a regular file is written, never a
//!   device, a FIFO or a folder; never a model this process has open; and an existing
//!   file only when it is of the kind being written (a GGUF model over a GGUF model, a
//!   session over a session) or empty, unless the caller says to replace any file
//!   ([`Overwrite::AnyFile`], `--force`).
//! - A symbolic link is followed: the file it names is replaced and the link stays.
//! - A new file gets the mode the umask allows (0666 masked); a replaced file keeps its
//!   mode (and its owner, where the process may set it).
//! - The temporaries being written are listed so that a process ending on a signal can
//!   remove them ([`remove_temporaries`]); those a killed process left behind (its pid is
//!   gone) are removed by the next write in that folder and reported through
//!   [`set_note_sink`].

use std::fs::{self, File, Metadata, Permissions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

pub use crate::error::{Dest, WriteError};
use crate::file::{is_open, not_regular};

/// The kinds of file loupe writes, told apart by their first bytes: what an existing
/// destination is decides whether a write may replace it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A GGUF model (`GGUF`).
    Gguf,
    /// A chat session (`LOUPESES`).
    Session,
    /// Bytes with no signature: tensor dumps, plots, any other file.
    Data,
}

impl Kind {
    /// The bytes a file of this kind starts with (none for [`Kind::Data`]).
    pub const fn magic(self) -> &'static [u8] {
        match self {
            Kind::Gguf => b"GGUF",
            Kind::Session => b"LOUPESES",
            Kind::Data => b"",
        }
    }

    /// For messages: "a GGUF model".
    pub fn name(self) -> &'static str {
        match self {
            Kind::Gguf => "a GGUF model",
            Kind::Session => "a loupe session",
            Kind::Data => "a data file",
        }
    }

    /// The kind of a file that starts with `head`.
    pub fn of(head: &[u8]) -> Kind {
        [Kind::Gguf, Kind::Session]
            .into_iter()
            .find(|k| head.starts_with(k.magic()))
            .unwrap_or(Kind::Data)
    }
}

/// Which existing file a write may replace (it never replaces anything but a regular file,
/// nor a model open in this process).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overwrite {
    /// A file of the kind being written, or an empty one.
    SameKind,
    /// Any regular file (`--force`, or the user said yes).
    AnyFile,
}

impl Overwrite {
    /// `AnyFile` when forced, else `SameKind`.
    pub fn forced(force: bool) -> Overwrite {
        if force {
            Overwrite::AnyFile
        } else {
            Overwrite::SameKind
        }
    }
}

/// The most symbolic links followed from a destination (Linux's own limit).
const MAX_LINKS: usize = 40;

/// Where a write to `path` lands once symbolic links are followed, and what is there;
/// refused with a [`WriteError`] naming the path when the rules above forbid the write.
/// Public so that a front end can ask before it writes (the chat's `/save` confirms the
/// replacement of a file of another kind).
pub fn check_destination(
    path: &Path,
    kind: Kind,
    overwrite: Overwrite,
) -> Result<(Dest, Option<Metadata>), WriteError> {
    let dest = resolve(path)?;
    let io = |source| WriteError::Io {
        dest: dest.clone(),
        source,
    };
    let meta = match fs::metadata(&dest.target) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((dest, None)),
        Err(e) => return Err(io(e)),
    };
    if let Some(what) = not_regular(meta.file_type()) {
        return Err(WriteError::NotAFile { dest, what });
    }
    if is_open(&meta) {
        return Err(WriteError::OpenModel { dest });
    }
    if overwrite == Overwrite::SameKind && meta.len() > 0 {
        let mut head = Vec::with_capacity(8);
        File::open(&dest.target)
            .and_then(|f| f.take(8).read_to_end(&mut head))
            .map_err(io)?;
        let found = Kind::of(&head);
        if found != kind {
            return Err(WriteError::OtherKind {
                dest,
                found,
                writing: kind,
            });
        }
    }
    Ok((dest, Some(meta)))
}

/// Follow `path` through symbolic links to the file they name (which may not exist yet).
fn resolve(path: &Path) -> Result<Dest, WriteError> {
    let mut target = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&target) {
            Ok(m) if m.file_type().is_symlink() => {
                let next = fs::read_link(&target).map_err(|source| WriteError::Io {
                    dest: Dest {
                        path: path.to_path_buf(),
                        target: target.clone(),
                    },
                    source,
                })?;
                target = match target.parent() {
                    Some(dir) if next.is_relative() => dir.join(next),
                    _ => next,
                };
            }
            _ => {
                return Ok(Dest {
                    path: path.to_path_buf(),
                    target,
                })
            }
        }
    }
    Err(WriteError::Io {
        dest: Dest {
            path: path.to_path_buf(),
            target,
        },
        source: io::Error::other(format!("more than {MAX_LINKS} symbolic links")),
    })
}

/// A file being written in place of a destination; it becomes the destination on
/// [`AtomicFile::commit`].
pub struct AtomicFile {
    dest: Dest,
    kind: Kind,
    overwrite: Overwrite,
    tmp: tempfile::NamedTempFile,
    _listed: Listed,
}

impl AtomicFile {
    /// Start writing `path`, a file of `kind`; `what` names the writer in the temporary
    /// file's name ("quantize", "session": lowercase letters).
    pub fn create(
        path: &Path,
        what: &str,
        kind: Kind,
        overwrite: Overwrite,
    ) -> Result<AtomicFile, WriteError> {
        debug_assert!(what.bytes().all(|b| b.is_ascii_lowercase()), "{what}");
        let (dest, existing) = check_destination(path, kind, overwrite)?;
        let io = |source| WriteError::Io {
            dest: dest.clone(),
            source,
        };
        let dir = folder_of(&dest.target);
        remove_stale(dir);
        let (tmp, listed) = Listed::make(
            || {
                tempfile::Builder::new()
                    .prefix(&temp_prefix(what))
                    .suffix(".tmp")
                    // The kernel masks this with the umask, as for any file a program
                    // creates.
                    .permissions(Permissions::from_mode(0o666))
                    .tempfile_in(dir)
            },
            |t| t.path(),
        )
        .map_err(io)?;
        if let Some(old) = existing {
            let f = tmp.as_file();
            // The owner first: changing it may clear set-id bits the mode then restores.
            let now = f.metadata().map_err(io)?;
            if (old.uid(), old.gid()) != (now.uid(), now.gid()) {
                let _ = std::os::unix::fs::fchown(f, Some(old.uid()), Some(old.gid()));
            }
            f.set_permissions(Permissions::from_mode(old.mode() & 0o7777))
                .map_err(io)?;
        }
        Ok(AtomicFile {
            dest,
            kind,
            overwrite,
            tmp,
            _listed: listed,
        })
    }

    /// The destination as given.
    pub fn path(&self) -> &Path {
        &self.dest.path
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

    /// Sync the bytes to disk, check the destination again (it may have changed while
    /// the file was written) and rename the file over it.
    pub fn commit(self) -> Result<(), WriteError> {
        let io = |source| WriteError::Io {
            dest: self.dest.clone(),
            source,
        };
        self.tmp.as_file().sync_all().map_err(io)?;
        let (dest, _) = check_destination(&self.dest.path, self.kind, self.overwrite)?;
        self.tmp.persist(&dest.target).map_err(|e| io(e.error))?;
        // The rename itself reaches the disk with the folder (best effort: some file
        // systems cannot sync a folder).
        if let Ok(dir) = File::open(folder_of(&dest.target)) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// Write `bytes` to `path` atomically, under the rules above.
pub fn write_atomically(
    path: &Path,
    what: &str,
    kind: Kind,
    overwrite: Overwrite,
    bytes: &[u8],
) -> Result<(), WriteError> {
    let f = AtomicFile::create(path, what, kind, overwrite)?;
    let io = |source| WriteError::Io {
        dest: f.dest.clone(),
        source,
    };
    let mut w = f.writer();
    w.write_all(bytes).map_err(io)?;
    w.flush().map_err(io)?;
    drop(w);
    f.commit()
}

/// A temporary folder (`.loupe-WHAT-PID-XXXXXX.tmp` in the system's temporary folder),
/// removed with everything in it when dropped, or by [`remove_temporaries`].
pub struct TempFolder {
    dir: tempfile::TempDir,
    _listed: Listed,
}

impl TempFolder {
    pub fn new(what: &str) -> io::Result<TempFolder> {
        let base = std::env::temp_dir();
        remove_stale(&base);
        let (dir, listed) = Listed::make(
            || {
                tempfile::Builder::new()
                    .prefix(&temp_prefix(what))
                    .suffix(".tmp")
                    .tempdir_in(&base)
            },
            |d| d.path(),
        )?;
        Ok(TempFolder {
            dir,
            _listed: listed,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

fn temp_prefix(what: &str) -> String {
    format!(".loupe-{what}-{}-", std::process::id())
}

// ---- Temporaries being written, for a process ending on a signal ----

/// The temporary files and folders of this process not yet renamed or removed.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A path in [`LIVE`] while this lives.
struct Listed(PathBuf);

impl Listed {
    /// Make a temporary and list it, under the list's lock: a signal's cleaning either
    /// comes first (and nothing is made: the lock is never released) or sees it.
    fn make<T>(
        make: impl FnOnce() -> io::Result<T>,
        path: impl Fn(&T) -> &Path,
    ) -> io::Result<(T, Listed)> {
        let mut live = live();
        let t = make()?;
        let p = path(&t).to_path_buf();
        live.push(p.clone());
        Ok((t, Listed(p)))
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        let mut live = live();
        if let Some(i) = live.iter().position(|p| *p == self.0) {
            live.swap_remove(i);
        }
    }
}

/// For a process about to end on a signal (called from the application's handler, on an
/// ordinary thread): remove every temporary file and folder being written (a commit under
/// way then fails: its file is gone), and keep new ones from being made until the process
/// is gone (the list stays locked). Returns how many were removed.
pub fn remove_temporaries() -> usize {
    let live = live();
    let mut n = 0;
    for p in live.iter() {
        let removed = match fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(p),
            Ok(_) => fs::remove_file(p),
            Err(e) => Err(e),
        };
        n += usize::from(removed.is_ok());
    }
    std::mem::forget(live);
    n
}

// ---- Temporaries a killed process left behind ----

/// Where notes go (the application prints them): a stale temporary removed.
static NOTE_SINK: OnceLock<fn(&str)> = OnceLock::new();

/// Say notes (stale temporaries removed) through `sink`; without one they are not said.
pub fn set_note_sink(sink: fn(&str)) {
    let _ = NOTE_SINK.set(sink);
}

fn note(s: &str) {
    if let Some(sink) = NOTE_SINK.get() {
        sink(s);
    }
}

/// The process id in a temporary's name (`.loupe-WHAT-PID-XXXXXX.tmp`).
fn temp_owner(name: &str) -> Option<u32> {
    let s = name.strip_prefix(".loupe-")?.strip_suffix(".tmp")?;
    let mut parts = s.split('-');
    let (what, pid, rand) = (parts.next()?, parts.next()?, parts.next()?);
    let ok = parts.next().is_none()
        && !what.is_empty()
        && what.bytes().all(|b| b.is_ascii_lowercase())
        && rand.len() == 6
        && rand.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then(|| pid.parse().ok()).flatten()
}

/// Remove from `dir` the temporaries of loupe processes that are gone (killed before they
/// could clean up), saying each. A process is gone when `/proc` has no entry for its pid;
/// where there is no `/proc`, nothing is removed.
fn remove_stale(dir: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let me = std::process::id();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(temp_owner) else {
            continue;
        };
        if pid == me || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = e.path();
        let Ok(m) = fs::symlink_metadata(&path) else {
            continue;
        };
        let (removed, size) = if m.is_dir() {
            (fs::remove_dir_all(&path), dir_size(&path))
        } else if m.is_file() {
            (fs::remove_file(&path), m.len())
        } else {
            continue; // a link or anything else by that name is not ours
        };
        match removed {
            Ok(()) => note(&format!(
                "removed {} ({:.1} MiB), left behind by loupe process {pid}, which is gone",
                path.display(),
                size as f64 / (1u64 << 20) as f64
            )),
            Err(err) => note(&format!(
                "cannot remove {}, left behind by loupe process {pid}, which is gone: {err}",
                path.display()
            )),
        }
    }
}

fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|es| {
            es.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(
        path: &Path,
        kind: Kind,
        overwrite: Overwrite,
        bytes: &[u8],
    ) -> Result<(), WriteError> {
        write_atomically(path, "test", kind, overwrite, bytes)
    }

    #[test]
    fn the_destination_changes_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        std::fs::write(&path, b"old").unwrap();
        let f = AtomicFile::create(&path, "test", Kind::Data, Overwrite::SameKind).unwrap();
        let mut w = f.writer();
        w.write_all(b"new bytes").unwrap();
        w.flush().unwrap();
        drop(w);
        let tmp = f.temp_path().to_path_buf();
        let name = tmp.file_name().unwrap().to_string_lossy().into_owned();
        let prefix = format!(".loupe-test-{}-", std::process::id());
        assert!(
            name.starts_with(&prefix) && name.ends_with(".tmp"),
            "{name}"
        );
        assert_eq!(temp_owner(&name), Some(std::process::id()));
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        f.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new bytes");
        assert!(!tmp.exists());

        // Dropped before the commit: no trace, the destination untouched.
        let f = AtomicFile::create(&path, "test", Kind::Data, Overwrite::SameKind).unwrap();
        let tmp = f.temp_path().to_path_buf();
        assert!(live().contains(&tmp));
        drop(f);
        assert!(!tmp.exists());
        assert!(!live().contains(&tmp));
        assert_eq!(std::fs::read(&path).unwrap(), b"new bytes");
        write(&path, Kind::Data, Overwrite::SameKind, b"third").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"third");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn devices_fifos_and_folders_are_refused() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let e = write(&fifo, Kind::Data, Overwrite::AnyFile, b"x").unwrap_err();
        assert!(
            matches!(e, WriteError::NotAFile { what: "a FIFO", .. }),
            "{e}"
        );
        assert!(e.to_string().contains("fifo is a FIFO"), "{e}");
        assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());

        let e = write(dir.path(), Kind::Data, Overwrite::AnyFile, b"x").unwrap_err();
        assert!(
            matches!(
                e,
                WriteError::NotAFile {
                    what: "a directory",
                    ..
                }
            ),
            "{e}"
        );
        // A character device like /dev/null (made here, where root may: never the real
        // one, which a broken check would replace).
        let dev = dir.path().join("null");
        let made = std::process::Command::new("mknod")
            .arg(&dev)
            .args(["c", "1", "3"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if made {
            let e = write(&dev, Kind::Data, Overwrite::AnyFile, b"x").unwrap_err();
            assert!(e.to_string().contains("null is a character device"), "{e}");
            assert!(fs::metadata(&dev).unwrap().file_type().is_char_device());
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1 + usize::from(made)
        );
    }

    #[test]
    fn a_link_is_followed_and_stays_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.bin");
        let link = dir.path().join("link.bin");
        std::fs::write(&real, b"old").unwrap();
        std::os::unix::fs::symlink("real.bin", &link).unwrap();
        write(&link, Kind::Data, Overwrite::SameKind, b"new").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&real).unwrap(), b"new");
        // A dangling link: the file it names is created.
        fs::remove_file(&real).unwrap();
        write(&link, Kind::Data, Overwrite::SameKind, b"made").unwrap();
        assert_eq!(fs::read(&real).unwrap(), b"made");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        // A link to a FIFO is refused, and the message says where it leads.
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let to_fifo = dir.path().join("to-fifo");
        std::os::unix::fs::symlink(&fifo, &to_fifo).unwrap();
        let e = write(&to_fifo, Kind::Data, Overwrite::AnyFile, b"x").unwrap_err();
        let want = format!("to-fifo (a link to {}) is a FIFO", fifo.display());
        assert!(e.to_string().contains(&want), "{e}");
    }

    #[test]
    fn new_files_follow_the_umask_and_replaced_files_keep_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        // The umask is the process's; read it from /proc rather than change it under the
        // other tests.
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let umask = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
            .unwrap();
        let new = dir.path().join("new.bin");
        write(&new, Kind::Data, Overwrite::SameKind, b"x").unwrap();
        let mode = fs::metadata(&new).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o666 & !umask, "umask {umask:o}");

        let old = dir.path().join("old.bin");
        fs::write(&old, b"old").unwrap();
        fs::set_permissions(&old, Permissions::from_mode(0o640)).unwrap();
        write(&old, Kind::Data, Overwrite::SameKind, b"new").unwrap();
        assert_eq!(fs::metadata(&old).unwrap().mode() & 0o7777, 0o640);
    }

    #[test]
    fn a_file_of_another_kind_is_replaced_only_when_forced() {
        let dir = tempfile::tempdir().unwrap();
        let notes = dir.path().join("notes.txt");
        fs::write(&notes, b"my notes").unwrap();
        let e = write(&notes, Kind::Gguf, Overwrite::SameKind, b"GGUF...").unwrap_err();
        assert!(
            e.to_string().ends_with(
                "notes.txt already exists and is not a GGUF model: pass --force to replace it"
            ),
            "{e}"
        );
        assert_eq!(fs::read(&notes).unwrap(), b"my notes");
        write(&notes, Kind::Gguf, Overwrite::AnyFile, b"GGUF...").unwrap();
        assert_eq!(fs::read(&notes).unwrap(), b"GGUF...");
        // A model is not replaced by a dump, a session by a model; same kinds replace each
        // other, and an empty file is anyone's.
        let e = write(&notes, Kind::Data, Overwrite::SameKind, b"floats").unwrap_err();
        assert!(
            e.to_string().contains("is a GGUF model: pass --force"),
            "{e}"
        );
        write(&notes, Kind::Gguf, Overwrite::SameKind, b"GGUF again").unwrap();
        fs::write(&notes, b"LOUPESES...").unwrap();
        let e = write(&notes, Kind::Gguf, Overwrite::SameKind, b"GGUF").unwrap_err();
        assert!(
            matches!(
                e,
                WriteError::OtherKind {
                    found: Kind::Session,
                    ..
                }
            ),
            "{e}"
        );
        fs::write(&notes, b"").unwrap();
        write(&notes, Kind::Session, Overwrite::SameKind, b"LOUPESES").unwrap();
        write(&notes, Kind::Session, Overwrite::SameKind, b"LOUPESES 2").unwrap();
        assert_eq!(fs::read(&notes).unwrap(), b"LOUPESES 2");
    }

    #[test]
    fn an_open_model_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let mut w = crate::GgufWriter::new(crate::Metadata::default());
        w.add_tensor(crate::TensorToWrite {
            name: "t".into(),
            ty: loupe_quant::GgmlType::F32,
            dims: vec![4],
            data: std::borrow::Cow::Owned(vec![0u8; 16]),
        });
        w.write(&path).unwrap();
        let before = fs::read(&path).unwrap();
        let link = dir.path().join("link.gguf");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let open = crate::GgufFile::open(&path).unwrap();
        for p in [&path, &link] {
            let e = write(p, Kind::Gguf, Overwrite::AnyFile, b"GGUF").unwrap_err();
            assert!(matches!(e, WriteError::OpenModel { .. }), "{e}");
            assert!(e.to_string().contains("is a model open in this run"), "{e}");
        }
        assert_eq!(fs::read(&path).unwrap(), before);
        drop(open);
        write(&path, Kind::Gguf, Overwrite::SameKind, b"GGUF").unwrap();
    }

    #[test]
    fn stale_temporaries_of_gone_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // A process that has ended: its pid is free (and not soon reused).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = dir
            .path()
            .join(format!(".loupe-quantize-{dead}-aB3xY9.tmp"));
        let live = dir
            .path()
            .join(format!(".loupe-quantize-{}-aB3xY9.tmp", std::process::id()));
        let other = dir
            .path()
            .join(format!(".loupe-quantize-{dead}-tooLong.tmp"));
        for p in [&stale, &live, &other] {
            fs::write(p, b"partial").unwrap();
        }
        let folder = dir.path().join(format!(".loupe-ladder-{dead}-Qq1234.tmp"));
        fs::create_dir(&folder).unwrap();
        fs::write(folder.join("a.gguf"), b"GGUF").unwrap();
        write(
            &dir.path().join("out.bin"),
            Kind::Data,
            Overwrite::SameKind,
            b"x",
        )
        .unwrap();
        assert!(!stale.exists());
        assert!(!folder.exists());
        assert!(live.exists(), "a temporary of a running process stays");
        assert!(other.exists(), "a name loupe does not make stays");
    }

    #[test]
    fn temporaries_are_removed_for_a_signal() {
        // Only the listing is checked here (removing would lock the list for good); the
        // CLI tests send SIGTERM to a running quantization.
        let f = TempFolder::new("test").unwrap();
        assert!(live().contains(&f.path().to_path_buf()));
        let p = f.path().to_path_buf();
        drop(f);
        assert!(!p.exists());
        assert!(!live().contains(&p));
    }
}
