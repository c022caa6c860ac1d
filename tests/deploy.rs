//! The GitOps manifests in `deploy/`: the Argo CD health checks in argocd-cm are the tested Lua
//! files, and the ApplicationSets send every example file to the right clusters — global
//! objects to every cluster, each region's backends only to that region's cluster.

use std::path::Path;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn documents(relative: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(&read(relative))
        .map(|d| serde_json::Value::deserialize(d).unwrap_or_else(|e| panic!("{relative}: {e}")))
        .collect()
}

#[test]
fn argocd_cm_carries_the_tested_lua_scripts() {
    let cm = &documents("deploy/argocd/argocd-cm-health.yaml")[0];
    for kind in [
        "SovereignRegion",
        "InferenceBackend",
        "ResidencyPolicy",
        "TokenBudget",
    ] {
        let key = format!("resource.customizations.health.sovereign.ai_{kind}");
        let embedded = cm["data"][&key].as_str().unwrap_or_default();
        // render-cm.sh puts the shared helpers in front of each script.
        let script = read("deploy/argocd/health/common.lua")
            + &read(&format!("deploy/argocd/health/{kind}.lua"));
        assert!(
            embedded == script,
            "{key} differs from deploy/argocd/health/common.lua + {kind}.lua: run deploy/argocd/render-cm.sh"
        );
    }
}

/// Shell-style match of `name` against `pattern` with `*` and one `{a,b}` alternation, the
/// subset Argo CD's `directory.include` globs here use.
fn glob(pattern: &str, name: &str) -> bool {
    if let (Some(open), Some(close)) = (pattern.find('{'), pattern.find('}')) {
        let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
        return pattern[open + 1..close]
            .split(',')
            .any(|alternative| glob(&format!("{head}{alternative}{tail}"), name));
    }
    match pattern.split_once('*') {
        None => pattern == name,
        Some((prefix, rest)) => {
            name.starts_with(prefix)
                && (prefix.len()..=name.len())
                    .any(|i| name.is_char_boundary(i) && glob(rest, &name[i..]))
        }
    }
}

#[test]
fn application_sets_send_global_objects_everywhere_and_regional_ones_home() {
    let sets = documents("deploy/argocd/applicationset.yaml");
    let include = |name: &str| -> String {
        let set = sets
            .iter()
            .find(|s| s["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no ApplicationSet {name}"));
        set["spec"]["template"]["spec"]["source"]["directory"]["include"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no directory.include"))
            .to_owned()
    };
    let global = include("sovereign-global");
    let regional = include("sovereign-regional");
    let files: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/eu-india"))
            .expect("example dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
    for region in ["eu", "in"] {
        // The template as the cluster generator fills it for a cluster of `region`.
        let mine = regional.replace(
            r#"{{ index .metadata.labels "sovereign.ai/region" }}"#,
            region,
        );
        for file in &files {
            let (to_all, to_me) = (glob(&global, file), glob(&mine, file));
            assert!(!(to_all && to_me), "{file} would be sent twice to {region}");
            let other_region =
                file.starts_with("20-backends-") && !file.ends_with(&format!("-{region}.yaml"));
            if other_region {
                assert!(
                    !to_all && !to_me,
                    "{file} must not reach the {region} cluster"
                );
            } else {
                assert!(to_all || to_me, "{file} never reaches the {region} cluster");
            }
        }
    }
    assert!(glob("{a,b-*}.yaml", "b-x.yaml") && !glob("{a,b-*}.yaml", "c.yaml"));
}

#[test]
fn the_operator_application_set_uses_an_overlay_per_region() {
    let sets = documents("deploy/argocd/applicationset.yaml");
    let operator = sets
        .iter()
        .find(|s| s["metadata"]["name"] == "sovereign-operator")
        .expect("operator ApplicationSet");
    let path = operator["spec"]["template"]["spec"]["source"]["path"]
        .as_str()
        .expect("path");
    for region in ["eu", "in"] {
        let overlay = path.replace(
            r#"{{ index .metadata.labels "sovereign.ai/region" }}"#,
            region,
        );
        let text = read(&format!("{overlay}/kustomization.yaml"));
        assert!(text.contains(&format!("--region={region}")), "{overlay}");
    }
}

#[test]
fn a_peer_reader_may_get_the_published_totals_and_nothing_else() {
    let template = read("charts/sovereign-operator/templates/peer-readers.yaml");
    let name = sovereign_operator::finops::global::TOTALS_NAME;
    assert!(
        template.contains(&format!("resourceNames: [{name}]")),
        "the peer Role must name the ConfigMap the operator publishes ({name})"
    );
    let rules: Vec<&str> = template
        .lines()
        .filter(|l| l.trim_start().starts_with("verbs:"))
        .collect();
    assert_eq!(rules, ["    verbs: [get]"], "one rule, get only");
}
