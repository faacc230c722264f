//! The shape of the house, checked: inside each crate the modules import each other without
//! circles, the rules crate pulls in no gRPC runtime, and no hand-written source file grows past
//! about 700 lines (ARCHITECTURE.md explains why each of these matters).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Most lines a hand-written source file may have: "about 700", with room for a doc paragraph.
const MAX_LINES: usize = 750;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and without its test module, where a test may use any
/// module it likes.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests {").next().unwrap_or_default();
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// Top-level module → the top-level modules it names with `crate::`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
        let top = rel.components().next().expect("a component").as_os_str().to_string_lossy();
        let top = top.trim_end_matches(".rs").to_string();
        let name = file.file_name().expect("a name").to_string_lossy();
        // The crate root, binaries and test modules are not part of the module picture.
        if ["lib", "main", "bin"].contains(&top.as_str())
            || name == "tests.rs"
            || name == "conformance.rs"
            || rel.components().any(|c| c.as_os_str() == "tests")
        {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        let mut rest = code(&text);
        let uses = graph.entry(top.clone()).or_default();
        while let Some(i) = rest.find("crate::") {
            rest = rest[i + "crate::".len()..].to_string();
            let module: String =
                rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !module.is_empty() && module != top {
                uses.insert(module);
            }
        }
    }
    graph
}

/// A circle through `start`, if there is one.
fn circle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        let here = path.last().expect("a non-empty path").clone();
        for next in graph.get(&here).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    walk(graph, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn the_modules_of_each_crate_import_each_other_without_circles() {
    for krate in ["registry-core", "registry-server", "registry-client"] {
        let graph = module_graph(&root().join(krate).join("src"));
        assert!(graph.len() > 3, "{krate}: the module picture is empty: {graph:?}");
        let circles: Vec<_> = graph.keys().filter_map(|m| circle_from(&graph, m)).collect();
        assert!(circles.is_empty(), "{krate} has import circles: {circles:?}");
    }
}

#[test]
fn the_circle_check_finds_a_circle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["c".to_string()])),
        ("c".to_string(), BTreeSet::from(["a".to_string()])),
        ("d".to_string(), BTreeSet::from(["a".to_string()])),
    ]
    .into();
    assert_eq!(
        circle_from(&graph, "a"),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(circle_from(&graph, "d"), None);
}

#[test]
fn no_hand_written_source_file_is_over_about_700_lines() {
    let mut files = Vec::new();
    for dir in ["proto", "registry-core", "registry-server", "registry-client", "tests"] {
        rust_files(&root().join(dir), &mut files);
    }
    assert!(files.len() > 50, "found only {} source files", files.len());
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).expect("readable").lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these files: {long:?}");
}

#[test]
fn the_rules_crate_depends_on_no_grpc_runtime() {
    // The manifests say what a build of registry-core alone compiles: registry-proto without
    // its `grpc` feature, which is the only way tonic could come in.
    let core = std::fs::read_to_string(root().join("registry-core/Cargo.toml")).expect("manifest");
    let deps = core.split("[dependencies]").nth(1).expect("a [dependencies] table");
    let deps = deps.split("\n[").next().unwrap_or_default();
    for runtime in ["tonic", "hyper", "axum", "tokio"] {
        assert!(
            !deps.lines().any(|l| l.trim_start().starts_with(runtime)),
            "registry-core depends on {runtime}"
        );
    }
    assert!(
        deps.lines().any(|l| l.starts_with("registry-proto") && !l.contains("grpc")),
        "registry-core must take registry-proto without the grpc feature:\n{deps}"
    );
    let proto = std::fs::read_to_string(root().join("proto/Cargo.toml")).expect("manifest");
    assert!(
        proto.contains("tonic = { workspace = true, optional = true }"),
        "tonic must stay optional in registry-proto"
    );
}
