//! ARCHITECTURE.md stays true: every repository path it names exists.

use std::path::Path;

/// The backticked spans of `text` that look like repository paths.
fn named_paths(text: &str) -> Vec<&str> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| {
            !span.contains(' ')
                && !span.starts_with("../")
                && (span.ends_with('/')
                    || span
                        .rsplit_once('.')
                        .is_some_and(|(_, ext)| ["rs", "proto", "toml", "md"].contains(&ext)))
                && span.contains('/')
        })
        .collect()
}

#[test]
fn every_path_in_architecture_md_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let paths = named_paths(&text);
    assert!(paths.len() > 30, "found only {} paths: {paths:?}", paths.len());
    let missing: Vec<&&str> = paths.iter().filter(|p| !root.join(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist: {missing:?}"
    );
}
