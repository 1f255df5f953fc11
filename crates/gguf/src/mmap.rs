//! Memory mapping of model files (the only `unsafe` needed to read them).
#![allow(unsafe_code)]

use std::fs::File;

use memmap2::Mmap;

/// Map a file read-only.
pub(crate) fn map_file(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: the map is read-only and every access is bounds-checked against its
    // length. Model files are treated as immutable while loaded; if another
    // process truncates the file underneath us the OS may raise SIGBUS, which is
    // the documented limitation of memory-mapped I/O (the same as llama.cpp).
    unsafe { Mmap::map(file) }
}
