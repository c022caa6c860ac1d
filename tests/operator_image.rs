//! The operator's image is described in three places that must agree: `scripts/image.sh`
//! (which builds the OCI archive the e2e suite runs, and `make image`), the `Dockerfile` (for
//! anyone with a container engine) and the Helm chart (which deploys it by default). This test
//! fails when they differ: reference, entrypoint, command, user, port, and the binary's version.
//! The e2e test `image` checks the built archive itself against the rendered chart.

use std::collections::BTreeMap;
use std::path::Path;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `NAME=value` assignments at the start of a line of scripts/image.sh.
fn script_constants() -> BTreeMap<String, String> {
    read("scripts/image.sh")
        .lines()
        .filter_map(|l| l.strip_prefix("IMAGE_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("IMAGE_{k}"), v.trim().to_owned()))
        .collect()
}

/// The instructions of the Dockerfile's last stage, by keyword (the last of each).
fn final_stage() -> BTreeMap<String, String> {
    let text = read("Dockerfile");
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("the Dockerfile has a FROM");
    lines[start..]
        .iter()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// The value of `key: value` in the YAML block starting at `block:` (two-space indent).
fn yaml_value(text: &str, block: &str, key: &str) -> Option<String> {
    let mut inside = block.is_empty();
    for line in text.lines() {
        if !block.is_empty() && line.starts_with(&format!("{block}:")) {
            inside = true;
            continue;
        }
        if inside && !block.is_empty() && !line.starts_with(' ') && !line.is_empty() {
            inside = false;
        }
        let indent = if block.is_empty() { "" } else { "  " };
        if inside && let Some(rest) = line.strip_prefix(&format!("{indent}{key}:")) {
            return Some(rest.trim().trim_matches('"').to_owned());
        }
    }
    None
}

#[test]
fn the_dockerfile_builds_what_scripts_image_sh_builds() {
    let script = script_constants();
    let stage = final_stage();
    let entrypoint = &script["IMAGE_ENTRYPOINT"];
    assert_eq!(stage["ENTRYPOINT"], format!("[\"{entrypoint}\"]"));
    assert_eq!(stage["CMD"], format!("[\"{}\"]", script["IMAGE_CMD"]));
    assert_eq!(stage["USER"], script["IMAGE_USER"]);
    assert_eq!(stage["EXPOSE"], script["IMAGE_PORT"]);
    assert!(
        stage["COPY"].ends_with(&format!(" {entrypoint}")),
        "the Dockerfile installs the binary elsewhere: {}",
        stage["COPY"]
    );
}

#[test]
fn the_chart_deploys_the_image_that_is_built() {
    let script = script_constants();
    let values = read("charts/sovereign-operator/values.yaml");
    let chart = read("charts/sovereign-operator/Chart.yaml");
    let cargo = read("Cargo.toml");
    let app_version = yaml_value(&chart, "", "appVersion").expect("Chart.yaml appVersion");
    let cargo_version =
        yaml_value(&cargo.replace(" = ", ": "), "", "version").expect("Cargo.toml version");
    assert_eq!(
        app_version, cargo_version,
        "the chart's appVersion (the image tag) is not the binary's version"
    );
    assert_eq!(
        yaml_value(&values, "image", "tag").as_deref(),
        Some(""),
        "values.yaml pins image.tag: the default must be the chart's appVersion"
    );
    let repository = yaml_value(&values, "image", "repository").expect("image.repository");
    let reference = format!("{repository}:{app_version}");
    // The Dockerfile's documented build command tags the same reference.
    assert!(
        read("Dockerfile").contains(&format!("docker build -t {reference} .")),
        "the Dockerfile's build command does not tag {reference}"
    );
    let (uid, gid) = script["IMAGE_USER"].split_once(':').expect("uid:gid");
    let deployment = read("charts/sovereign-operator/templates/deployment.yaml");
    assert!(deployment.contains(&format!("runAsUser: {uid}")));
    assert!(deployment.contains(&format!("runAsGroup: {gid}")));
    assert_eq!(
        yaml_value(&values, "metrics", "port").as_deref(),
        Some(script["IMAGE_PORT"].as_str()),
        "the chart's metrics port is not the port the image exposes"
    );
}
