//! The offline entry point of `check` and `render`: any bytes as a manifest file must give
//! documents or a ManifestError — never a panic — and whatever parses must go through the
//! residency engine and the renderer without panicking either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sovereign_operator::manifest;
use sovereign_operator::render::region::offline_children;
use sovereign_operator::residency::engine::Engine;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(documents) = manifest::parse("fuzz.yaml", text) else {
        return;
    };
    let values: Vec<serde_json::Value> = documents.iter().map(|d| d.value.clone()).collect();
    let Ok(resources) = manifest::classify(documents) else {
        return;
    };
    let engine = Engine::new(&resources.regions, &resources.policies);
    let _ = engine.evaluate(values.iter());
    let _ = offline_children(&resources.regions, &resources.backends, &resources.policies);
});
