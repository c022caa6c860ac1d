//! The documentation holds together: every relative link in the repository's Markdown (README,
//! docs/, the READMEs beside scripts) names a file that exists and, with `#anchor`, a heading
//! of that file; every `docs/*.md` a module doc or comment points to exists; and the README
//! stays the short page a newcomer reads (the reference lives in docs/).

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Markdown files of the repository, build outputs and caches left out.
fn markdown_files() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable directory") {
            let path = entry.expect("directory entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if path.is_dir() {
                if !matches!(name, "target" | ".git" | "node_modules" | "fuzz") {
                    stack.push(path);
                }
            } else if name.ends_with(".md") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The lines of a Markdown file outside fenced code blocks.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut in_fence = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if !in_fence {
            lines.push(line);
        }
    }
    lines
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces to hyphens; a repeated heading gets `-1`, `-2`, ...
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for line in prose_lines(text) {
        let Some(title) = line.strip_prefix('#').map(|t| t.trim_start_matches('#')) else {
            continue;
        };
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut candidate = slug.clone();
        let mut n = 1;
        while seen.contains(&candidate) {
            candidate = format!("{slug}-{n}");
            n += 1;
        }
        seen.insert(candidate);
    }
    seen
}

/// Link targets `[text](target)` in prose (inline code spans removed first).
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
        let mut prose = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                prose.push_str(part);
            }
        }
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            targets.push(after[..end].trim().to_string());
            rest = &after[end..];
        }
    }
    targets
}

fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn broken_links(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).expect("readable markdown");
    let mut broken = Vec::new();
    for target in link_targets(&text) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (target.as_str(), None),
        };
        let resolved = if path.is_empty() {
            file.to_path_buf()
        } else {
            normalise(&file.parent().expect("file has a directory").join(path))
        };
        // ../shared/ (the design and fixtures) lies beside the repository, not in it: a
        // clone on its own does not have it, so only links inside the repository are held.
        if !resolved.starts_with(root()) {
            continue;
        }
        if !resolved.exists() {
            broken.push(format!("{}: {target} (no such file)", file.display()));
            continue;
        }
        if let Some(anchor) = anchor {
            let target_text = std::fs::read_to_string(&resolved).unwrap_or_default();
            if !anchors(&target_text).contains(anchor) {
                broken.push(format!("{}: {target} (no such heading)", file.display()));
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_resolves() {
    let files = markdown_files();
    assert!(
        files.iter().any(|f| f.ends_with("docs/ARCHITECTURE.md")),
        "docs/ARCHITECTURE.md is missing"
    );
    let broken: Vec<String> = files.iter().flat_map(|f| broken_links(f)).collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_checker_sees_a_broken_link_and_a_missing_heading() {
    let dir = std::env::temp_dir().join(format!("docs-links-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let page = dir.join("page.md");
    std::fs::write(
        &page,
        "# Title\n\n## Two words\n\n[ok](#two-words) [self](page.md#title) [gone](missing.md) [bad](#nope)\n```\n[in code](nowhere.md)\n```\n",
    )
    .expect("write page");
    // The page is outside the repository, so resolve its links as if it were inside.
    let text = std::fs::read_to_string(&page).expect("read page");
    assert_eq!(
        link_targets(&text),
        vec!["#two-words", "page.md#title", "missing.md", "#nope"]
    );
    let heads = anchors(&text);
    assert!(heads.contains("two-words") && heads.contains("title") && !heads.contains("nope"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn docs_named_in_the_code_exist() {
    let mut missing = Vec::new();
    let mut stack = vec![root().join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for (at, _) in text.match_indices("docs/") {
                let name: String = text[at..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'))
                    .collect();
                let name = name.trim_end_matches('.');
                if name.ends_with(".md") && !root().join(name).exists() {
                    missing.push(format!("{}: {name}", path.display()));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs named in src/ that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn readme_is_the_short_page() {
    let size = std::fs::metadata(root().join("README.md"))
        .expect("README.md")
        .len();
    assert!(
        size < 10 * 1024,
        "README.md is {size} bytes: keep it under 10 KB and move reference text to docs/"
    );
}
