//! docs/ARCHITECTURE.md's module map names every source file under importer/src, and no file
//! that is gone: a file added, split or renamed without its line in the map fails here, named.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const MAP: &str = "docs/ARCHITECTURE.md";
const SOURCES: &str = "importer/src";

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, as a path relative to the repository with `/` separators.
fn source_files(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).unwrap();
            out.insert(relative.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// The files the map's table names: the first cell of each row, `` `importer/src/….rs` ``.
fn mapped_files(map: &str) -> BTreeSet<String> {
    map.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(path, _)| path.to_string())
        .filter(|path| path.starts_with(SOURCES) && path.ends_with(".rs"))
        .collect()
}

#[test]
fn the_module_map_names_every_source_file_and_no_file_that_is_gone() {
    let root = repository();
    let map = std::fs::read_to_string(root.join(MAP)).unwrap();
    let named = mapped_files(&map);
    let mut files = BTreeSet::new();
    source_files(&root.join(SOURCES), &root, &mut files);
    let unnamed: Vec<&String> = files.difference(&named).collect();
    let gone: Vec<&String> = named.difference(&files).collect();
    assert!(
        unnamed.is_empty() && gone.is_empty(),
        "{MAP}, \"Module map\": source files without a line: {unnamed:?}; lines for files that \
         do not exist: {gone:?}"
    );
}

#[test]
fn a_map_row_is_read_by_its_first_cell_only() {
    let map = "| file | what |\n| `importer/src/a.rs` | holds `importer/src/b.rs` |\n\
               see `importer/src/c.rs`\n| `docs/x.md` | no |\n";
    let named: Vec<String> = mapped_files(map).into_iter().collect();
    assert_eq!(named, ["importer/src/a.rs"]);
}
