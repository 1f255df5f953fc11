//! Model cache location and name resolution (own process: it sets environment variables).

use verinfer_inference::models;

#[test]
fn cache_location_and_resolution() {
    let dir = tempfile::tempdir().expect("tempdir");
    // This test binary holds a single test, so no other thread reads the
    // environment while it is changed.
    std::env::set_var("VERINFER_HOME", dir.path());
    assert_eq!(
        models::models_dir().expect("dir"),
        dir.path().join("models")
    );
    let err = models::resolve("smollm2-135m").expect_err("not fetched");
    let msg = err.to_string();
    assert!(msg.contains("verinfer models fetch smollm2-135m"), "{msg}");
    let err = models::resolve("no-such-model").expect_err("unknown");
    assert!(err.to_string().contains("smollm2-135m"), "{err}");
    assert!(models::list().expect("list").is_empty());

    // A file given by path resolves to itself; one in the cache by file name.
    let f = dir.path().join("x.gguf");
    std::fs::write(&f, b"GGUF").expect("write");
    assert_eq!(models::resolve(f.to_str().expect("utf8")).expect("path"), f);
    std::fs::create_dir_all(dir.path().join("models")).expect("mkdir");
    let g = dir.path().join("models").join("y.gguf");
    std::fs::write(&g, b"GGUF").expect("write");
    assert_eq!(models::resolve("y.gguf").expect("cached file"), g);
    let listed = models::list().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].model_id.len(), 64);
    assert!(listed[0].name.is_none());

    // Without VERINFER_HOME, XDG_DATA_HOME decides.
    std::env::remove_var("VERINFER_HOME");
    std::env::set_var("XDG_DATA_HOME", dir.path());
    assert_eq!(
        models::models_dir().expect("dir"),
        dir.path().join("verinfer").join("models")
    );
    let err = models::fetch("nope", &mut |_| {}).expect_err("unknown model");
    assert!(err.to_string().contains("unknown model"));
}
