//! The residency corpus (`tests/residency/`): every object says what the engine must decide
//! about it (`sovereign.ai/expect: allow|deny`, optionally `sovereign.ai/expect-rule`), and this
//! test holds the engine to it, with the EU/India example's regions, policies and namespaces as
//! context. The admission e2e sends the same objects to a real API server, so the offline check
//! and admission are held to one set of answers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sovereign_operator::manifest::{self, Document};
use sovereign_operator::residency::{Engine, Finding, Inventory, Rule};

const EXPECT: &str = "sovereign.ai/expect";
const EXPECT_RULE: &str = "sovereign.ai/expect-rule";
const WHY: &str = "sovereign.ai/why";

fn read(relative: &str) -> Vec<Document> {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    manifest::read_paths(&[path]).expect("readable manifests")
}

/// (kind, namespace, name) of a document.
fn key(value: &serde_json::Value) -> (String, String, String) {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    (
        text(&value["kind"]),
        text(&value["metadata"]["namespace"]),
        text(&value["metadata"]["name"]),
    )
}

struct Run {
    corpus: Vec<Document>,
    findings: BTreeMap<(String, String, String), Vec<Finding>>,
}

fn run() -> Run {
    let example = read("deploy/examples/eu-india");
    let corpus = read("tests/residency");
    let resources = manifest::classify(example.iter().chain(&corpus).cloned().collect())
        .expect("valid custom resources");
    let engine = Engine::new(&resources.regions, &resources.policies);
    let inventory = Inventory::of(example.iter().chain(&corpus).map(|d| &d.value));
    let evaluation = engine.evaluate_with(&inventory, corpus.iter().map(|d| &d.value));
    assert!(evaluation.errors.is_empty(), "{:?}", evaluation.errors);
    let mut findings: BTreeMap<_, Vec<Finding>> = BTreeMap::new();
    for finding in evaluation.findings {
        let key = (
            finding.kind.clone(),
            finding.namespace.clone(),
            finding.name.clone(),
        );
        findings.entry(key).or_default().push(finding);
    }
    Run { corpus, findings }
}

#[test]
fn every_object_gets_the_verdict_it_expects() {
    let run = run();
    let mut failures = Vec::new();
    let mut seen = BTreeSet::new();
    for document in &run.corpus {
        let value = &document.value;
        let key = key(value);
        assert!(
            seen.insert(key.clone()),
            "{key:?} appears twice in the corpus"
        );
        let annotations = &value["metadata"]["annotations"];
        let got = run
            .findings
            .get(&key)
            .map(Vec::as_slice)
            .unwrap_or_default();
        match annotations[EXPECT].as_str() {
            Some("allow") if !got.is_empty() => failures.push(format!(
                "{key:?}: expected allow, got {:#?}",
                got.iter().map(ToString::to_string).collect::<Vec<_>>()
            )),
            Some("allow") => {}
            Some("deny") if got.is_empty() => {
                failures.push(format!("{key:?}: expected deny, got allow"));
            }
            Some("deny") => {
                if let Some(rule) = annotations[EXPECT_RULE].as_str() {
                    let rule = Rule::from_name(rule)
                        .unwrap_or_else(|| panic!("{key:?}: unknown rule {rule}"));
                    if !got.iter().any(|f| f.rule == rule) {
                        failures.push(format!(
                            "{key:?}: expected a {rule} violation, got {:#?}",
                            got.iter().map(ToString::to_string).collect::<Vec<_>>()
                        ));
                    }
                }
                // Every denial must say what to change, not only that something is wrong.
                for finding in got {
                    assert!(finding.message.len() > 30, "terse message: {finding}");
                }
            }
            other => failures.push(format!("{key:?}: no {EXPECT} annotation ({other:?})")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn the_corpus_is_large_and_covers_every_rule_both_ways() {
    let run = run();
    let objects = run
        .corpus
        .iter()
        .filter(|d| d.value["kind"] != "Namespace")
        .count();
    assert!(objects >= 40, "the corpus shrank to {objects} objects");
    let denied_rules: BTreeSet<&str> = run
        .corpus
        .iter()
        .filter_map(|d| d.value["metadata"]["annotations"][EXPECT_RULE].as_str())
        .collect();
    for rule in Rule::ALL {
        assert!(
            denied_rules.contains(rule.as_str()),
            "no corpus object is denied by {rule}"
        );
    }
    let allowed = run
        .corpus
        .iter()
        .filter(|d| d.value["metadata"]["annotations"][EXPECT] == "allow")
        .count();
    assert!(allowed >= 15, "too few compliant objects: {allowed}");
}

/// The red-team cases (issue 13): at least 100 objects, each saying why it must be allowed or
/// denied, with the false-block cases (allow) as many as matter.
#[test]
fn red_team_cases_say_why_both_ways() {
    let run = run();
    let cases: Vec<&Document> = run
        .corpus
        .iter()
        .filter(|d| !d.value["metadata"]["annotations"][WHY].is_null())
        .filter(|d| d.value["kind"] != "Namespace")
        .collect();
    assert!(cases.len() >= 100, "only {} red-team cases", cases.len());
    for case in &cases {
        let why = case.value["metadata"]["annotations"][WHY]
            .as_str()
            .unwrap_or_default();
        assert!(why.len() > 15, "{:?}: say why", key(&case.value));
    }
    let allowed = cases
        .iter()
        .filter(|d| d.value["metadata"]["annotations"][EXPECT] == "allow")
        .count();
    eprintln!(
        "red-team cases: {} ({allowed} must be allowed, {} denied)",
        cases.len(),
        cases.len() - allowed
    );
    assert!(allowed >= 30, "too few false-block cases: {allowed}");
    assert!(
        cases.len() - allowed >= 30,
        "too few leaks: {}",
        cases.len() - allowed
    );
}

/// The audit stores what the rules read of each object (`engine::project`), not the object:
/// judging every corpus and example object's projection gives the same findings, in the same
/// order and words, and the same dependents, as judging the objects themselves. A rule that
/// starts reading a field the projection drops fails here.
#[test]
fn judging_the_projections_gives_the_same_verdicts() {
    use sovereign_operator::residency::engine::{dependents, project};
    let example = read("deploy/examples/eu-india");
    let corpus = read("tests/residency");
    let resources = manifest::classify(example.iter().chain(&corpus).cloned().collect())
        .expect("valid custom resources");
    let engine = Engine::new(&resources.regions, &resources.policies);
    let whole: Vec<serde_json::Value> = example
        .iter()
        .chain(&corpus)
        .map(|d| d.value.clone())
        .collect();
    let projected: Vec<serde_json::Value> = whole.iter().map(project).collect();
    // The audit's watches project, and so does its store: a projection projects to itself.
    for p in &projected {
        assert_eq!(&project(p), p, "{:?}", key(p));
    }
    let judge = |objects: &[serde_json::Value]| {
        let inventory = Inventory::of(objects);
        let evaluation = engine.evaluate_with(&inventory, objects);
        assert!(evaluation.errors.is_empty(), "{:?}", evaluation.errors);
        evaluation
            .findings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    let (full, slim) = (judge(&whole), judge(&projected));
    assert!(full.len() >= 40, "the corpus has findings: {}", full.len());
    assert_eq!(full, slim);
    for (w, p) in whole.iter().zip(&projected) {
        assert_eq!(dependents(w), dependents(p), "{:?}", key(w));
        assert_eq!(
            Inventory::is_referenced(w),
            Inventory::is_referenced(p),
            "{:?}",
            key(w)
        );
    }
    let size = |v: &[serde_json::Value]| v.iter().map(|o| o.to_string().len()).sum::<usize>();
    eprintln!(
        "projection: {} → {} bytes of JSON",
        size(&whole),
        size(&projected)
    );
}
