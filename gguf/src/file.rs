//! A GGUF file opened by memory map: the parsed directory plus borrowed tensor bytes.
//!
//! Only regular files are opened (a FIFO would block the open, a device would be read
//! without end), and every open file is listed by its device and inode until it is dropped,
//! so that no write of this process replaces a model it has open ([`is_open`]).

use std::fs::{self, File, FileType};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use memmap2::Mmap;

use super::error::{GgufError, Result};
use super::metadata::Metadata;
use super::parse::{parse, Directory};
use super::TensorInfo;

/// An open GGUF file. Tensor data is borrowed from the map; nothing is copied.
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    dir: Directory,
    id: FileId,
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
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref().to_path_buf();
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
        Ok(GgufFile { path, map, dir, id })
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

    /// Absolute file offset where the tensor data section starts.
    pub fn data_offset(&self) -> u64 {
        self.dir.data_offset
    }

    pub fn file_size(&self) -> u64 {
        self.map.len() as u64
    }

    /// Hand the whole pages inside `data` (bytes borrowed from this map) back to the
    /// kernel: they leave this process's resident memory and are read from the page cache
    /// again if touched. For tensors copied elsewhere at load (repacked weights), so the
    /// model is not resident twice. Best effort: a failure only leaves the pages resident.
    pub fn release(&self, data: &[u8]) {
        let base = self.map.as_ptr() as usize;
        let start = data.as_ptr() as usize;
        if start < base || start + data.len() > base + self.map.len() {
            return; // not ours
        }
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
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    first,
                    end - first,
                )
            };
        }
    }

    /// The tensor's bytes, borrowed from the map. Bounds were checked when the file was
    /// opened, for every tensor of the directory.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let start = (self.dir.data_offset + t.offset) as usize;
        &self.map[start..start + t.n_bytes() as usize]
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
        if let Some(i) = open.iter().position(|&id| id == self.id) {
            open.swap_remove(i);
        }
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.dir.version)
            .field("tensors", &self.dir.tensors.len())
            .field("metadata", &self.dir.metadata.len())
            .finish()
    }
}
