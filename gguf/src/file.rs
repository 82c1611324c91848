//! A GGUF file opened by memory map: the parsed directory plus borrowed tensor bytes.
//!
//! Only regular files are opened (a FIFO would block the open, a device would be read
//! without end), and every open file is listed by its device and inode until it is dropped,
//! so that no write of this process replaces a model it has open ([`is_open`]).
//!
//! A model split by llama.cpp's `gguf-split` (`NAME-00001-of-00003.gguf`, …) is opened
//! from its first part: every part is mapped, the first part's metadata is the model's,
//! and the tensor directory is the union of the parts', each tensor's bytes borrowed from
//! the map of the part that holds them ([`TensorInfo::part`]).

use std::fs::{self, File, FileType};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use memmap2::Mmap;

use super::error::{GgufError, Result};
use super::metadata::Metadata;
use super::parse::{parse, Directory};
use super::TensorInfo;

/// An open GGUF file (or every part of a split one). Tensor data is borrowed from the
/// maps; nothing is copied.
pub struct GgufFile {
    path: PathBuf,
    /// The first part's directory, with every part's tensors.
    dir: Directory,
    /// One per part, the first part first.
    parts: Vec<Part>,
}

/// One mapped file of a model.
struct Part {
    map: Mmap,
    /// Absolute offset of this part's tensor data section.
    data_offset: u64,
    id: FileId,
}

/// The metadata keys `gguf-split` writes in every part.
pub const SPLIT_NO: &str = "split.no";
pub const SPLIT_COUNT: &str = "split.count";
pub const SPLIT_TENSORS_COUNT: &str = "split.tensors.count";

/// The path of part `no` (from 1) of the split model whose first part is `first`
/// (`NAME-00001-of-0000N.gguf`); `None` when `first` is not named that way.
pub fn split_part_path(first: &Path, no: u32) -> Option<PathBuf> {
    let name = first.file_name()?.to_str()?;
    let stem = name.strip_suffix(".gguf")?;
    let tail = stem.get(stem.len().checked_sub(15)?..)?;
    let b = tail.as_bytes();
    let ok = b[0] == b'-'
        && &b[6..10] == b"-of-"
        && b[1..6].iter().chain(&b[10..15]).all(u8::is_ascii_digit);
    ok.then(|| {
        first.with_file_name(format!(
            "{}-{no:05}{}.gguf",
            &stem[..stem.len() - 15],
            &tail[6..]
        ))
    })
}

/// A file's identity: (device, inode).
type FileId = (u64, u64);

/// The GGUF files open in this process, once per [`GgufFile`] (a file opened twice is
/// listed twice).
static OPEN: Mutex<Vec<FileId>> = Mutex::new(Vec::new());

fn open_files() -> std::sync::MutexGuard<'static, Vec<FileId>> {
    OPEN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether the file `meta` describes is a GGUF file this process has open.
pub fn is_open(meta: &fs::Metadata) -> bool {
    open_files().contains(&(meta.dev(), meta.ino()))
}

/// What a file that is not a regular one is, for messages ("a FIFO"); `None` for a regular
/// file.
pub fn not_regular(ft: FileType) -> Option<&'static str> {
    Some(if ft.is_file() {
        return None;
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    })
}

impl GgufFile {
    /// Open a GGUF file; for the first part of a split model, every part.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref().to_path_buf();
        let (map, dir, id) = GgufFile::open_one(&path)?;
        let first = Part {
            map,
            data_offset: dir.data_offset,
            id,
        };
        let mut f = GgufFile {
            path,
            dir,
            parts: vec![first],
        };
        // On an error `f` is dropped, which unlists every part opened so far.
        f.open_other_parts()?;
        Ok(f)
    }

    /// Map and parse one file, listed as open.
    fn open_one(path: &Path) -> Result<(Mmap, Directory, FileId)> {
        let path = path.to_path_buf();
        let io = |source| GgufError::Io {
            path: path.clone(),
            source,
        };
        // Looked at before opening: opening a FIFO would wait for a writer.
        let meta = fs::metadata(&path).map_err(io)?;
        if let Some(what) = not_regular(meta.file_type()) {
            return Err(GgufError::NotAFile { path, what });
        }
        let file = File::open(&path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if let Some(what) = not_regular(meta.file_type()) {
            return Err(GgufError::NotAFile { path, what });
        }
        // SAFETY: the map is read-only and private to this process. Another process
        // truncating or rewriting the file while it is mapped would change the bytes under
        // us (or fault); like llama.cpp we accept that for model files, which are not
        // written while in use.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let dir = parse(&map)?;
        let id = (meta.dev(), meta.ino());
        open_files().push(id);
        Ok((map, dir, id))
    }

    /// For the first part of a split model, map the others and add their tensors; checks
    /// that each part says it is that part of as many, and that the parts hold the tensor
    /// count the first one states, each tensor once. A file that is not split is left as is.
    fn open_other_parts(&mut self) -> Result<()> {
        let md = &self.dir.metadata;
        let int = |md: &Metadata, key: &str| md.get(key).and_then(|v| v.as_i128());
        let Some(count) = int(md, SPLIT_COUNT) else {
            return Ok(());
        };
        let bad = |path: &Path, field: &'static str, problem: String| GgufError::Split {
            path: path.to_path_buf(),
            field,
            problem,
        };
        let no = int(md, SPLIT_NO).unwrap_or(0);
        if !(1..=9999).contains(&count) {
            return Err(bad(&self.path, SPLIT_COUNT, format!("{count} parts")));
        }
        if no != 0 {
            return Err(bad(
                &self.path,
                SPLIT_NO,
                format!(
                    "this is part {} of {count}; open the first part (…-00001-of-{count:05}.gguf)",
                    no + 1
                ),
            ));
        }
        if count == 1 {
            return Ok(());
        }
        let total = int(md, SPLIT_TENSORS_COUNT);
        for i in 1..count as u32 {
            let Some(path) = split_part_path(&self.path, i + 1) else {
                return Err(bad(
                    &self.path,
                    SPLIT_COUNT,
                    format!("{count} parts, but the file is not named NAME-00001-of-{count:05}.gguf, so the other parts cannot be found"),
                ));
            };
            let (map, mut pdir, id) = GgufFile::open_one(&path).map_err(|e| match e {
                GgufError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                    bad(
                        &path,
                        SPLIT_COUNT,
                        format!("part {} of {count} is missing", i + 1),
                    )
                }
                e => e,
            })?;
            let index = self.parts.len();
            self.parts.push(Part {
                map,
                data_offset: pdir.data_offset,
                id,
            });
            let (p_count, p_no) = (
                int(&pdir.metadata, SPLIT_COUNT),
                int(&pdir.metadata, SPLIT_NO),
            );
            if p_count != Some(count) {
                let found = p_count.map_or("missing".into(), |c| c.to_string());
                return Err(bad(
                    &path,
                    SPLIT_COUNT,
                    format!("{found}, but the first part says {count}"),
                ));
            }
            if p_no != Some(i as i128) {
                let found = p_no.map_or("missing".into(), |c| c.to_string());
                return Err(bad(
                    &path,
                    SPLIT_NO,
                    format!("{found}, expected {i} (part {} of {count})", i + 1),
                ));
            }
            for t in &mut pdir.tensors {
                t.part = index;
            }
            self.dir.tensors.append(&mut pdir.tensors);
        }
        if let Some(total) = total {
            if total != self.dir.tensors.len() as i128 {
                return Err(bad(
                    &self.path,
                    SPLIT_TENSORS_COUNT,
                    format!("{total}, but the {count} parts hold {} tensors (parts of different models?)", self.dir.tensors.len()),
                ));
            }
        }
        let mut names: Vec<&str> = self.dir.tensors.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(bad(
                &self.path,
                SPLIT_TENSORS_COUNT,
                format!(
                    "tensor {:?} is in more than one part (parts of different models?)",
                    w[0]
                ),
            ));
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.dir.version
    }

    pub fn metadata(&self) -> &Metadata {
        &self.dir.metadata
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.dir.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.dir.tensors.iter().find(|t| t.name == name)
    }

    pub fn alignment(&self) -> u64 {
        self.dir.alignment
    }

    /// Absolute file offset where the tensor data section starts (in the first part).
    pub fn data_offset(&self) -> u64 {
        self.dir.data_offset
    }

    /// Bytes of the file, or of all parts of a split model.
    pub fn file_size(&self) -> u64 {
        self.parts.iter().map(|p| p.map.len() as u64).sum()
    }

    /// How many files the model is in (1 unless split).
    pub fn part_count(&self) -> usize {
        self.parts.len()
    }

    /// Where the tensor's bytes start in the file of its part (the only file unless split).
    pub fn tensor_file_offset(&self, t: &TensorInfo) -> u64 {
        self.parts[t.part].data_offset + t.offset
    }

    /// Hand the whole pages inside `data` (bytes borrowed from this map) back to the
    /// kernel: they leave this process's resident memory and are read from the page cache
    /// again if touched. For tensors copied elsewhere at load (repacked weights), so the
    /// model is not resident twice. Best effort: a failure only leaves the pages resident.
    pub fn release(&self, data: &[u8]) {
        let start = data.as_ptr() as usize;
        let owner = self.parts.iter().find(|p| {
            let base = p.map.as_ptr() as usize;
            start >= base && start + data.len() <= base + p.map.len()
        });
        let Some(Part { map, .. }) = owner else {
            return; // not ours
        };
        let base = map.as_ptr() as usize;
        let page = 4096;
        let first = (start - base).next_multiple_of(page);
        let end = (start - base + data.len()) / page * page;
        if end <= first {
            return;
        }
        #[cfg(unix)]
        {
            // SAFETY: the map is read-only, so none of its pages holds a private change:
            // MADV_DONTNEED only drops this process's page-table entries, and a later read
            // of the range (a borrow may still exist) faults the same file bytes back in.
            // The range is whole pages inside the map.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, first, end - first)
            };
        }
    }

    /// The tensor's bytes, borrowed from the map of the part that holds it. Bounds were
    /// checked when each part was opened, for every tensor of its directory.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let part = &self.parts[t.part];
        let start = (part.data_offset + t.offset) as usize;
        &part.map[start..start + t.n_bytes() as usize]
    }

    /// The tensor's values as f32. A type loupe cannot decode is an error naming the
    /// tensor and its type.
    pub fn dequantize(&self, t: &TensorInfo) -> Result<Vec<f32>> {
        let mut out = vec![0f32; t.n_elements() as usize];
        loupe_quant::dequantize_row(t.ty, self.tensor_data(t), &mut out).map_err(|source| {
            GgufError::Quant {
                name: t.name.clone(),
                source,
            }
        })?;
        Ok(out)
    }

    /// Dequantize the tensor a few whole rows at a time (about `chunk_elems` values per
    /// call of `f`), so statistics over a large tensor need no tensor-sized buffer.
    pub fn dequantize_chunked(
        &self,
        t: &TensorInfo,
        chunk_elems: usize,
        mut f: impl FnMut(&[f32]),
    ) -> Result<()> {
        let row_len = t.row_len() as usize;
        let row_bytes = t.ty.row_bytes(t.row_len()).unwrap_or(0) as usize;
        let rows_per_chunk = (chunk_elems / row_len).max(1);
        let mut buf = vec![0f32; rows_per_chunk * row_len];
        for bytes in self.tensor_data(t).chunks(rows_per_chunk * row_bytes) {
            let n = bytes.len() / row_bytes * row_len;
            loupe_quant::dequantize_row(t.ty, bytes, &mut buf[..n]).map_err(|source| {
                GgufError::Quant {
                    name: t.name.clone(),
                    source,
                }
            })?;
            f(&buf[..n]);
        }
        Ok(())
    }
}

impl Drop for GgufFile {
    fn drop(&mut self) {
        let mut open = open_files();
        for p in &self.parts {
            if let Some(i) = open.iter().position(|&id| id == p.id) {
                open.swap_remove(i);
            }
        }
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.dir.version)
            .field("parts", &self.parts.len())
            .field("tensors", &self.dir.tensors.len())
            .field("metadata", &self.dir.metadata.len())
            .finish()
    }
}
