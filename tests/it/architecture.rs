//! Architecture invariants from ARCHITECTURE.md, checked on the source tree so they
//! fail a test rather than sit in prose.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// Test modules may read fixtures; the invariants are about the code they test.
fn is_test_file(path: &str) -> bool {
    path.contains("/tests/") || path.ends_with("/tests.rs")
}

#[test]
fn only_the_sled_engine_knows_sled() {
    // The shared store room may name the engine module (`sled::SledStore`) and wrap
    // sled's error in `StoreError`, but never drives sled itself.
    let engine_types = [
        "sled::Tree",
        "sled::Db",
        "sled::Config",
        "sled::IVec",
        "sled::Batch",
    ];
    for (path, text) in sources() {
        if path.starts_with("src/store/sled/") {
            continue;
        }
        if path.starts_with("src/store/") {
            for t in engine_types {
                assert!(
                    !text.contains(t),
                    "{path} names {t}: sled belongs in store/sled/"
                );
            }
        } else {
            assert!(!text.contains("sled::"), "{path} names a sled type");
        }
    }
}

#[test]
fn routing_and_parsers_do_no_io() {
    let forbidden = [
        "std::fs",
        "std::net",
        "tokio",
        "Instant::now",
        "SystemTime",
        "std::env",
    ];
    for (path, text) in sources() {
        let pure = path == "src/route.rs" || path.starts_with("src/parse/");
        if !pure || is_test_file(&path) {
            continue;
        }
        for word in forbidden {
            assert!(!text.contains(word), "{path} uses {word}");
        }
    }
}

#[test]
fn every_module_says_what_it_owns() {
    for (path, text) in sources() {
        assert!(
            text.trim_start().starts_with("//!"),
            "{path} does not open with a //! comment"
        );
    }
}

#[test]
fn the_forward_path_never_touches_the_store() {
    for path in [
        "src/forward.rs",
        "src/tee.rs",
        "src/capture.rs",
        "src/route.rs",
        "src/headers.rs",
    ] {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
        assert!(!text.contains("crate::store"), "{path} reaches the store");
    }
}
