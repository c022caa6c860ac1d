//! Where an S3-compatible endpoint stores data, read from its host name the way the provider
//! resolves it. Only the labels right of the bucket count: a bucket may be named anything
//! (`s3-eu-west-3.s3.us-east-1.amazonaws.com` is the bucket `s3-eu-west-3` in us-east-1), so
//! the host is read from the provider suffix leftwards, never by searching for a region-shaped
//! label.
//!
//! Amazon S3 (<https://docs.aws.amazon.com/general/latest/gr/s3.html>,
//! <https://docs.aws.amazon.com/AmazonS3/latest/userguide/VirtualHosting.html>):
//! `s3.<region>.amazonaws.com` and `<bucket>.s3.<region>.amazonaws.com` (path and
//! virtual-hosted style), the legacy dash form `s3-<region>.amazonaws.com`, `s3-fips.<region>`,
//! `s3.dualstack.<region>`, `s3-fips.dualstack.<region>`, `s3-accesspoint[-fips].<region>`,
//! `s3-website[-.]<region>`, and the global `s3.amazonaws.com` / `s3-external-1.amazonaws.com`,
//! which are us-east-1; China under `amazonaws.com.cn`.
//!
//! Other providers spell the region in the host too: Scaleway `s3.<region>.scw.cloud`,
//! OVHcloud `s3.<region>.io.cloud.ovh.net` (also `perf.` and the older `cloud.ovh.net`),
//! Wasabi `s3.<region>.wasabisys.com`, Backblaze B2 `s3.<region>.backblazeb2.com`, IBM COS
//! `s3[.private|.direct].<region>.cloud-object-storage.appdomain.cloud`, IONOS
//! `s3[-.]<region>.ionoscloud.com`, DigitalOcean `<region>.digitaloceanspaces.com`, Linode
//! `<region>.linodeobjects.com`, Hetzner `<location>.your-objectstorage.com`, Exoscale
//! `sos-<zone>.exo.io`, Alibaba `oss-<region>.aliyuncs.com`, Tencent `cos.<region>.myqcloud.com`,
//! Oracle `<ns>.compat.objectstorage.<region>.oraclecloud.com`.
//!
//! Any other host (MinIO, Ceph RGW, GCS's `storage.googleapis.com`, whose bucket location is a
//! property of the bucket) spells no region: the caller then needs a declared location.

/// How a provider spells the region in the labels left of its suffix.
#[derive(Clone, Copy)]
enum Form {
    /// Amazon's service labels (see the module documentation).
    Amazon,
    /// `s3.<region>` (optionally `s3.<qualifier>.<region>` for IBM's `private`/`direct`) or
    /// `s3-<region>`.
    S3Label,
    /// The region is the label right before the suffix (`<region>.<suffix>`).
    Last,
    /// The label right before the suffix is `<prefix><region>`.
    Prefixed(&'static str),
    /// `<service>.<region>` with the given service label.
    Service(&'static str),
}

/// Provider suffixes, most specific first.
const PROVIDERS: [(&str, Form); 17] = [
    ("amazonaws.com.cn", Form::Amazon),
    ("amazonaws.com", Form::Amazon),
    ("scw.cloud", Form::S3Label),
    ("io.cloud.ovh.net", Form::S3Label),
    ("perf.cloud.ovh.net", Form::S3Label),
    ("cloud.ovh.net", Form::S3Label),
    ("wasabisys.com", Form::S3Label),
    ("backblazeb2.com", Form::S3Label),
    ("cloud-object-storage.appdomain.cloud", Form::S3Label),
    ("ionoscloud.com", Form::S3Label),
    ("digitaloceanspaces.com", Form::Last),
    ("linodeobjects.com", Form::Last),
    ("your-objectstorage.com", Form::Last),
    ("exo.io", Form::Prefixed("sos-")),
    ("aliyuncs.com", Form::Prefixed("oss-")),
    ("myqcloud.com", Form::Service("cos")),
    ("oraclecloud.com", Form::Service("objectstorage")),
];

/// The host of an endpoint: a URL's host, or the text itself when it is a bare host name
/// (`s3.eu-west-3.amazonaws.com`, `host:port`). Lower case, without a trailing dot.
pub fn endpoint_host(endpoint: &str) -> Option<String> {
    let endpoint = endpoint.trim();
    let parsed = url::Url::parse(endpoint)
        .ok()
        .filter(|u| u.host_str().is_some())
        .or_else(|| url::Url::parse(&format!("https://{endpoint}")).ok())?;
    let host = parsed
        .host_str()?
        .trim_end_matches('.')
        .to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// Whether `label` looks like a cloud region or zone name (`eu-west-3`, `fr-par`, `gra`,
/// `fra1`, `us-gov-west-1`): letters, digits and dashes, starting with a letter.
fn region_shaped(label: &str) -> bool {
    !label.is_empty()
        && label.starts_with(|c: char| c.is_ascii_lowercase())
        && label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The region an S3-compatible endpoint stores data in, when its host spells one.
pub fn s3_endpoint_region(endpoint: &str) -> Option<String> {
    let host = endpoint_host(endpoint)?;
    let (suffix, form) = PROVIDERS
        .iter()
        .find(|(suffix, _)| host.ends_with(&format!(".{suffix}")))?;
    let rest = &host[..host.len() - suffix.len() - 1];
    let labels: Vec<&str> = rest.split('.').collect();
    let last = *labels.last()?;
    let before = |n: usize| {
        labels
            .len()
            .checked_sub(n + 1)
            .and_then(|i| labels.get(i).copied())
    };
    let region = match form {
        Form::Amazon => amazon_region(&labels)?,
        Form::S3Label => {
            if let Some(region) = last.strip_prefix("s3-") {
                region.to_owned()
            } else if last == "s3" {
                // s3.wasabisys.com is Wasabi's us-east-1; other providers have no global host.
                return (*suffix == "wasabisys.com").then(|| "us-east-1".to_owned());
            } else if before(1) == Some("s3")
                || (matches!(before(1), Some("private" | "direct" | "public"))
                    && before(2) == Some("s3"))
            {
                last.to_owned()
            } else {
                return None;
            }
        }
        Form::Last => last.to_owned(),
        Form::Prefixed(prefix) => last.strip_prefix(prefix)?.to_owned(),
        Form::Service(service) => {
            if before(1) == Some(service) {
                last.to_owned()
            } else {
                return None;
            }
        }
    };
    region_shaped(&region).then_some(region)
}

/// The region of the labels left of `amazonaws.com`.
fn amazon_region(labels: &[&str]) -> Option<String> {
    let n = labels.len();
    let last = labels[n - 1];
    let before = |k: usize| n.checked_sub(k + 1).map(|i| labels[i]);
    // Global endpoints: us-east-1.
    if matches!(last, "s3" | "s3-external-1" | "s3-fips") && n >= 1 {
        return Some("us-east-1".into());
    }
    // Legacy dash forms: s3-<region>, s3-website-<region>, s3-fips-<region>.
    for prefix in ["s3-website-", "s3-fips-", "s3-"] {
        if let Some(region) = last.strip_prefix(prefix)
            && region.contains('-')
        {
            return Some(region.to_owned());
        }
    }
    // Dot forms: <service>.<region> or <service>.dualstack.<region>.
    let service = |label: &str| {
        label == "s3"
            || label == "s3-fips"
            || label == "s3-website"
            || label.starts_with("s3-accesspoint")
            || label == "s3-object-lambda"
            || label == "s3-control"
    };
    match (before(1), before(2)) {
        (Some(s), _) if service(s) => Some(last.to_owned()),
        (Some("dualstack"), Some(s)) if service(s) => Some(last.to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_spell_their_region_as_the_provider_resolves_it() {
        let cases = [
            ("https://s3.eu-west-3.amazonaws.com", Some("eu-west-3")),
            (
                "https://s3-eu-central-1.amazonaws.com",
                Some("eu-central-1"),
            ),
            (
                "https://bucket.s3.us-east-1.amazonaws.com",
                Some("us-east-1"),
            ),
            (
                "https://bucket.s3-eu-west-1.amazonaws.com/x",
                Some("eu-west-1"),
            ),
            (
                "https://s3.dualstack.ap-south-1.amazonaws.com",
                Some("ap-south-1"),
            ),
            ("https://s3-fips.us-east-2.amazonaws.com", Some("us-east-2")),
            (
                "https://s3-fips.dualstack.us-west-2.amazonaws.com",
                Some("us-west-2"),
            ),
            (
                "https://ap-1234.s3-accesspoint.eu-west-3.amazonaws.com",
                Some("eu-west-3"),
            ),
            (
                "http://b.s3-website-eu-west-1.amazonaws.com",
                Some("eu-west-1"),
            ),
            (
                "http://b.s3-website.eu-central-1.amazonaws.com",
                Some("eu-central-1"),
            ),
            ("https://s3.amazonaws.com", Some("us-east-1")),
            ("https://bucket.s3.amazonaws.com", Some("us-east-1")),
            ("https://s3-external-1.amazonaws.com", Some("us-east-1")),
            ("https://s3.cn-north-1.amazonaws.com.cn", Some("cn-north-1")),
            // A bucket named like a region does not move the data.
            (
                "https://s3-eu-west-3.s3.us-east-1.amazonaws.com",
                Some("us-east-1"),
            ),
            ("https://eu-central-1.s3.amazonaws.com", Some("us-east-1")),
            ("HTTPS://S3.EU-WEST-3.AMAZONAWS.COM.", Some("eu-west-3")),
            ("s3.eu-west-3.amazonaws.com", Some("eu-west-3")),
            ("s3.eu-west-3.amazonaws.com:443", Some("eu-west-3")),
            ("https://s3.fr-par.scw.cloud", Some("fr-par")),
            ("https://bucket.s3.nl-ams.scw.cloud", Some("nl-ams")),
            ("https://s3.gra.io.cloud.ovh.net", Some("gra")),
            (
                "https://s3.eu-central-1.wasabisys.com",
                Some("eu-central-1"),
            ),
            ("https://s3.wasabisys.com", Some("us-east-1")),
            (
                "https://s3.eu-central-003.backblazeb2.com",
                Some("eu-central-003"),
            ),
            (
                "https://s3.private.eu-de.cloud-object-storage.appdomain.cloud",
                Some("eu-de"),
            ),
            (
                "https://s3-eu-central-1.ionoscloud.com",
                Some("eu-central-1"),
            ),
            ("https://fra1.digitaloceanspaces.com", Some("fra1")),
            ("https://bucket.ams3.digitaloceanspaces.com", Some("ams3")),
            ("https://fsn1.your-objectstorage.com", Some("fsn1")),
            ("https://sos-ch-gva-2.exo.io", Some("ch-gva-2")),
            (
                "https://oss-eu-central-1.aliyuncs.com",
                Some("eu-central-1"),
            ),
            ("https://cos.ap-mumbai.myqcloud.com", Some("ap-mumbai")),
            (
                "https://ns.compat.objectstorage.eu-frankfurt-1.oraclecloud.com",
                Some("eu-frankfurt-1"),
            ),
            // No region in the host.
            ("https://minio.internal:9000", None),
            ("https://storage.googleapis.com", None),
            ("https://s3.eu-west-3.amazonaws.com.evil.example", None),
            ("https://s3.eu-west-3.amazonaws.com@evil.example", None),
            ("https://evil-amazonaws.com", None),
            (
                "https://s3.attacker.example/s3.eu-west-3.amazonaws.com",
                None,
            ),
            ("not a url", None),
            ("", None),
        ];
        for (endpoint, expected) in cases {
            assert_eq!(
                s3_endpoint_region(endpoint).as_deref(),
                expected,
                "{endpoint}"
            );
        }
    }
}
