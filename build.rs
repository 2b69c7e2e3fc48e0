//! Embeds the dashboard: writes `$OUT_DIR/web_assets.rs`, a table of
//! every file under `web/` as `(relative path, include_bytes!(..))`.
//! `include_bytes!` puts each file in rustc's dep-info, so editing one
//! rebuilds the binary; watching the folder catches added and removed ones.

use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("web");
    println!("cargo:rerun-if-changed=web");
    let mut files = Vec::new();
    collect(&root, &mut files);
    // Sorted by the string the server looks up, for its binary search.
    let mut table: Vec<(String, String)> = files
        .iter()
        .map(|file| {
            let relative = file.strip_prefix(&root).unwrap();
            let parts: Vec<_> = relative.iter().map(|s| s.to_string_lossy()).collect();
            (parts.join("/"), file.display().to_string())
        })
        .collect();
    table.sort();
    let mut out = String::from("&[\n");
    for (relative, absolute) in &table {
        out.push_str(&format!(
            "    ({relative:?}, include_bytes!({absolute:?}) as &[u8]),\n"
        ));
    }
    out.push(']');
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("web_assets.rs");
    std::fs::write(dest, out).unwrap();
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
}
