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

/// The module path of a source file: `src/store/sled/mod.rs` -> `crate::store::sled`.
fn module_of(path: &str) -> Vec<String> {
    let rel = path.trim_start_matches("src/").trim_end_matches(".rs");
    let mut module = vec!["crate".to_string()];
    module.extend(rel.split('/').map(str::to_string));
    if module
        .last()
        .is_some_and(|m| m == "mod" || m == "lib" || m == "main")
    {
        module.pop();
    }
    module
}

/// Every path a `use` tree names, with its groups expanded: `a::{b, c::{d}}` ->
/// `a::b`, `a::c::d`.
fn expand_use_tree(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or(tree).trim();
        return vec![path.to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut depth, mut part, mut out) = (0, String::new(), Vec::new());
    for c in inner.chars().chain(std::iter::once(',')) {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if c == ',' && depth == 0 {
            if !part.trim().is_empty() {
                for sub in expand_use_tree(&part) {
                    let sub = if sub == "self" { String::new() } else { sub };
                    out.push(format!("{prefix}{sub}").trim_end_matches("::").to_string());
                }
            }
            part.clear();
        } else {
            part.push(c);
        }
    }
    out
}

const USE_KEYWORDS: [&str; 4] = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "];

/// The absolute paths a source file imports (`use` items, comments skipped), with
/// `self::` and `super::` resolved against the file's module. A path whose first
/// segment is neither `crate`, `self` nor `super` names a crate (`sled::Tree`) or a
/// module in scope, and is kept as written.
fn imports(path: &str, text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let module = module_of(path);
    let mut out = Vec::new();
    for item in code.split(';') {
        // The item's last line that starts a `use` begins it (what precedes it
        // belongs to earlier items: attributes, a closing brace).
        let lines: Vec<&str> = item.lines().map(str::trim).collect();
        let Some((start, keyword)) = lines.iter().enumerate().rev().find_map(|(i, line)| {
            USE_KEYWORDS
                .iter()
                .find(|k| line.starts_with(*k))
                .map(|k| (i, k.len()))
        }) else {
            continue;
        };
        let mut tree = lines[start][keyword..].to_string();
        for line in &lines[start + 1..] {
            tree.push(' ');
            tree.push_str(line);
        }
        for used in expand_use_tree(&tree) {
            let mut segments: Vec<&str> = used.split("::").map(str::trim).collect();
            let mut base: Vec<String> = match segments.first() {
                Some(&"crate") => {
                    segments.remove(0);
                    vec!["crate".into()]
                }
                Some(&"self") => {
                    segments.remove(0);
                    module.clone()
                }
                Some(&"super") => {
                    let mut base = module.clone();
                    while segments.first() == Some(&"super") {
                        segments.remove(0);
                        base.pop();
                    }
                    base
                }
                _ => Vec::new(),
            };
            base.extend(segments.iter().map(|s| s.to_string()));
            out.push(base.join("::"));
        }
    }
    out
}

#[test]
fn use_trees_are_read_as_the_compiler_reads_them() {
    let text = "//! doc: use crate::store::sled::X;\nuse super::{a, b::{c, d as e}};\npub(crate) use self::f::{self, G};\nuse sled::Tree;\n";
    assert_eq!(
        imports("src/store/postgres/engine.rs", text),
        vec![
            "crate::store::postgres::a",
            "crate::store::postgres::b::c",
            "crate::store::postgres::b::d",
            "crate::store::postgres::engine::f",
            "crate::store::postgres::engine::f::G",
            "sled::Tree",
        ]
    );
    assert_eq!(
        imports("src/store/mod.rs", "use super::sled;"),
        vec!["crate::sled"]
    );
}

/// Whether an import reaches into a room: `room` is a module path, or a crate name.
fn reaches(import: &str, room: &str) -> bool {
    import == room || import.starts_with(&format!("{room}::"))
}

#[test]
fn each_engine_imports_only_the_shared_store_and_never_the_other_engine() {
    // The rooms of the store (ARCHITECTURE.md, "the engine boundary"): `store/sled/`
    // and `store/postgres/` are the engines; `store/*.rs` is engine-independent and
    // imports neither (the handle's root `mod.rs` declares both and opens one, by
    // path, which is no import). Each engine's crate belongs to its own folder.
    const SLED: &str = "crate::store::sled";
    const POSTGRES: &str = "crate::store::postgres";
    const SLED_CRATE: &str = "sled";
    const POSTGRES_CRATES: [&str; 2] = ["tokio_postgres", "postgres_types"];
    let mut checked = 0;
    for (path, text) in sources() {
        let forbidden: Vec<&str> = if path.starts_with("src/store/sled/") {
            [POSTGRES].into_iter().chain(POSTGRES_CRATES).collect()
        } else if path.starts_with("src/store/postgres/") {
            vec![SLED, SLED_CRATE]
        } else if path.starts_with("src/store/") {
            [SLED, POSTGRES, SLED_CRATE]
                .into_iter()
                .chain(POSTGRES_CRATES)
                .collect()
        } else {
            // Outside the store, the handle is the way in; only the server and the
            // dev tools choose PostgreSQL (they open its pool), and nothing drives sled.
            vec![SLED, SLED_CRATE]
        };
        for import in imports(&path, &text) {
            checked += 1;
            for room in &forbidden {
                assert!(
                    !reaches(&import, room),
                    "{path} imports {import}: it must not reach {room}"
                );
            }
        }
    }
    assert!(checked > 100, "only {checked} imports read");
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
