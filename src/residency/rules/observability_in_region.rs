//! Observability stays in-region: the trace and Langfuse endpoints of a region must be hosts the
//! region declares as its own (`spec.inRegionHosts`, exact names or `*.suffix` wildcards).

use crate::api::region::SovereignRegion;

/// Whether `host` matches one of `patterns` (exact, or `*.suffix` for any sub-domain).
pub fn host_matches(host: &str, patterns: &[String]) -> bool {
    let host = host.to_ascii_lowercase();
    patterns.iter().any(|pattern| {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.strip_prefix("*.") {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => host == pattern,
        }
    })
}

/// Messages for every observability endpoint of `region` that is not an in-region host.
pub fn out_of_region_endpoints(region: &SovereignRegion) -> Vec<String> {
    let Some(observability) = &region.spec.observability else {
        return Vec::new();
    };
    let endpoints = [
        ("observability.otlpEndpoint", &observability.otlp_endpoint),
        ("observability.langfuseHost", &observability.langfuse_host),
    ];
    endpoints
        .into_iter()
        .filter_map(|(field, value)| {
            let value = value.as_ref()?;
            let host = url::Url::parse(value)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned));
            match host {
                Some(host) if host_matches(&host, &region.spec.in_region_hosts) => None,
                Some(host) => Some(format!(
                    "{field} host {host} is not in spec.inRegionHosts; traces would leave the region"
                )),
                None => Some(format!("{field} {value} is not a URL with a host")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::example_region;

    #[test]
    fn wildcards_match_sub_domains_only() {
        let patterns = vec!["*.eu.example.com".to_owned(), "otel.local".to_owned()];
        assert!(host_matches("langfuse.eu.example.com", &patterns));
        assert!(host_matches("OTEL.local", &patterns));
        assert!(!host_matches("eu.example.com", &patterns));
        assert!(!host_matches("evil-eu.example.com", &patterns));
        assert!(!host_matches("langfuse.us.example.com", &patterns));
    }

    #[test]
    fn example_regions_observe_in_region_and_a_foreign_host_is_reported() {
        for name in ["eu", "in"] {
            assert!(out_of_region_endpoints(&example_region(name)).is_empty());
        }
        let mut region = example_region("eu");
        if let Some(o) = region.spec.observability.as_mut() {
            o.langfuse_host = Some("https://cloud.langfuse.com".into());
        }
        let problems = out_of_region_endpoints(&region);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("cloud.langfuse.com"), "{problems:?}");
    }
}
