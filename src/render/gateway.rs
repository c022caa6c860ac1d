//! The region's LiteLLM gateway workload: the ConfigMap holding `config.yaml`, a Deployment that
//! rolls when the config changes, a Service and a PodDisruptionBudget. The config itself comes
//! from `gateway_config`.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapProjection, Container, EnvVar, KeyToPath, PodSpec, PodTemplateSpec,
    ProjectedVolumeSource, ServiceAccount, ServiceAccountTokenProjection, Volume, VolumeProjection,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

use super::gateway_config::{GUARD_FILE, GUARD_MODULE};
use super::k8s::{self, Disruption};
use super::pod::{
    region_affinity, region_node_selector, region_tolerations, restricted_container_security,
    restricted_pod_security,
};
use super::{Child, Owner, content_hash};
use crate::api::region::SovereignRegion;

/// `app.kubernetes.io/component` of the gateway's objects.
pub const COMPONENT: &str = "gateway";
/// Name of the gateway's Deployment, Service, ConfigMap and PDB.
pub const NAME: &str = "gateway";
/// Port LiteLLM listens on.
pub const PORT: i32 = 4000;
/// Pod-template annotation carrying the hash of the config: a new config, a new rollout.
pub const CONFIG_HASH_ANNOTATION: &str = "sovereign.ai/config-hash";
const CONFIG_DIR: &str = "/etc/litellm";
/// ConfigMap (in the region namespace) with the budget actions in force, written by the usage
/// controller and read by the guard module.
pub const ACTIONS_CONFIG_MAP: &str = "sovereign-budget-actions";
/// Key of the actions in that ConfigMap.
pub const ACTIONS_KEY: &str = "actions.json";
const ACTIONS_DIR: &str = "/etc/sovereign/actions";
/// ServiceAccount of the gateway pods: its only permission is to read the actions ConfigMap.
pub const SERVICE_ACCOUNT: &str = "gateway";
/// Role and RoleBinding that grant it.
pub const ACTIONS_READER: &str = "gateway-budget-actions";
/// Where the guard finds its API token and the cluster CA (a projected volume).
const API_DIR: &str = "/var/run/secrets/sovereign/api";
/// Lifetime asked for the projected token; the kubelet renews it at 80 %, and the guard
/// re-reads the file at every (re)connection.
const TOKEN_SECONDS: i64 = 3600;
/// The CA bundle every namespace gets from kube-controller-manager's root-CA publisher.
const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// Startup probe of the gateway: every 5 s, up to 36 misses (3 minutes) before the kubelet
/// gives up and restarts it.
const STARTUP_PERIOD_SECONDS: i32 = 5;
const STARTUP_FAILURES: i32 = 36;
/// The `nobody` uid the LiteLLM `non_root` image is built for (`USER nobody`; its /app and
/// Prisma files belong to it).
const GATEWAY_UID: i64 = 65534;
/// Destinations the gateway reaches directly even with an egress proxy: in-cluster Services
/// (vLLM, the collector) and loopback. The region's in-region hosts are added.
const NO_PROXY_ALWAYS: [&str; 4] = [".svc", ".cluster.local", "localhost", "127.0.0.1"];

/// `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` for the region's egress proxy, or nothing without
/// one. LiteLLM's HTTP clients honour them (httpx by default; its aiohttp transport unless
/// DISABLE_AIOHTTP_TRUST_ENV, litellm/llms/custom_httpx/aiohttp_transport.py
/// `_get_proxy_settings`). In-region hosts bypass the proxy: `*.x` becomes the suffix `.x`.
pub fn proxy_env(region: &SovereignRegion) -> Vec<EnvVar> {
    let Some(proxy) = region.spec.egress.as_ref().and_then(|e| e.proxy.as_ref()) else {
        return Vec::new();
    };
    let mut no_proxy: Vec<String> = NO_PROXY_ALWAYS.iter().map(|h| (*h).to_owned()).collect();
    for host in &region.spec.in_region_hosts {
        let host = host.strip_prefix('*').unwrap_or(host);
        if !no_proxy.iter().any(|h| h == host) {
            no_proxy.push(host.to_owned());
        }
    }
    let no_proxy = no_proxy.join(",");
    // Both spellings: Python's clients read either.
    [
        ("HTTPS_PROXY", proxy.url.as_str()),
        ("HTTP_PROXY", proxy.url.as_str()),
        ("NO_PROXY", no_proxy.as_str()),
        ("https_proxy", proxy.url.as_str()),
        ("http_proxy", proxy.url.as_str()),
        ("no_proxy", no_proxy.as_str()),
    ]
    .into_iter()
    .map(|(name, value)| k8s::env(name, value))
    .collect()
}

/// In-cluster URL of a region's gateway.
pub fn endpoint(namespace: &str) -> String {
    format!("http://{NAME}.{namespace}.svc:{PORT}")
}

/// The gateway's children for a rendered `config_yaml` and the environment it needs (API keys
/// from Secrets, master key, Langfuse keys, collector endpoint).
pub fn gateway_children(
    region: &SovereignRegion,
    owner: &Owner,
    config_yaml: &str,
    mut env: Vec<EnvVar>,
) -> Vec<Child> {
    let namespace = region.stack_namespace();
    let gateway = &region.spec.gateway;
    let selector = owner.selector(COMPONENT);
    let meta = || owner.meta(COMPONENT, NAME, Some(&namespace));

    let config_map = ConfigMap {
        metadata: meta(),
        data: Some(BTreeMap::from([
            ("config.yaml".to_owned(), config_yaml.to_owned()),
            (GUARD_FILE.to_owned(), GUARD_MODULE.to_owned()),
        ])),
        ..ConfigMap::default()
    };

    // Never fetch LiteLLM's model cost map from GitHub: that is a call abroad at every start,
    // and our prices come from the InferenceBackends anyway.
    env.push(k8s::env("LITELLM_LOCAL_MODEL_COST_MAP", "True"));
    env.push(k8s::env(
        "SOVEREIGN_BUDGET_ACTIONS",
        &format!("{ACTIONS_DIR}/{ACTIONS_KEY}"),
    ));
    // The guard watches the same ConfigMap through the API server (seconds, where the mounted
    // file follows only after the kubelet's sync period and cache TTL); the file stays as
    // the fallback. See sovereign_guard.py and docs/decisions.md.
    env.push(k8s::env(
        "SOVEREIGN_ACTIONS_CONFIGMAP",
        &format!("{namespace}/{ACTIONS_CONFIG_MAP}"),
    ));
    env.push(k8s::env(
        "SOVEREIGN_API_TOKEN_FILE",
        &format!("{API_DIR}/token"),
    ));
    env.push(k8s::env(
        "SOVEREIGN_API_CA_FILE",
        &format!("{API_DIR}/ca.crt"),
    ));
    env.extend(proxy_env(region));
    env.sort_by(|a, b| a.name.cmp(&b.name));
    env.dedup_by(|a, b| a.name == b.name);

    let probe = |path: &str| k8s::http_probe(path, PORT, 10, 3, None);
    let pod = PodSpec {
        affinity: Some(region_affinity(region, Vec::new())),
        node_selector: region_node_selector(region),
        tolerations: region_tolerations(region, Vec::new()),
        security_context: Some(restricted_pod_security(GATEWAY_UID)),
        service_account_name: Some(SERVICE_ACCOUNT.to_owned()),
        // No automounted token: the one token the pod gets is the projected volume below,
        // mounted into the LiteLLM container only, with a lifetime the operator chose.
        automount_service_account_token: Some(false),
        containers: vec![Container {
            name: "litellm".into(),
            image: Some(gateway.image.clone()),
            args: Some(vec![
                "--config".into(),
                format!("{CONFIG_DIR}/config.yaml"),
                "--port".into(),
                PORT.to_string(),
            ]),
            ports: Some(vec![k8s::container_port("http", PORT, None)]),
            env: Some(env),
            resources: gateway.resources.clone(),
            volume_mounts: Some(vec![
                k8s::mount("config", CONFIG_DIR, true),
                k8s::mount("budget-actions", ACTIONS_DIR, true),
                k8s::mount("api-token", API_DIR, true),
                k8s::mount("tmp", "/tmp", false),
            ]),
            // LiteLLM takes ~30 s to listen on a small node (measured: 29.5 s on 2 cores, the
            // e2e runner, 1.108.7); liveness alone (3 × 10 s) killed it before it ever started.
            // The startup probe holds liveness and readiness off for up to 3 minutes.
            startup_probe: Some(k8s::http_probe(
                "/health/liveliness",
                PORT,
                STARTUP_PERIOD_SECONDS,
                STARTUP_FAILURES,
                None,
            )),
            readiness_probe: Some(probe("/health/readiness")),
            liveness_probe: Some(probe("/health/liveliness")),
            security_context: Some(restricted_container_security(false)),
            ..Container::default()
        }],
        volumes: Some(vec![
            k8s::config_map_volume("config", NAME),
            // Optional: until a budget acts, the ConfigMap does not exist and the gateway
            // must start anyway. Its updates reach the pod without a rollout.
            k8s::optional_config_map_volume("budget-actions", ACTIONS_CONFIG_MAP),
            api_token_volume(),
            k8s::empty_dir("tmp", None),
        ]),
        ..PodSpec::default()
    };

    let deployment = Deployment {
        metadata: meta(),
        spec: Some(DeploymentSpec {
            replicas: Some(gateway.replicas),
            selector: k8s::match_labels(&selector),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector.clone()),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_owned(),
                        content_hash(config_yaml),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    };

    let service = k8s::http_service(meta(), &selector, PORT);

    // The account before the Deployment: its pods cannot be created without it.
    let mut children = vec![Child::from(config_map)];
    children.extend(actions_reader(owner, &namespace));
    children.push(Child::from(deployment));
    children.push(Child::from(service));
    if gateway.replicas > 1 {
        children.push(Child::from(k8s::pod_disruption_budget(
            meta(),
            &selector,
            Disruption::MinAvailable(1),
        )));
    }
    children
}

/// The gateway's token for the API server and the cluster CA, as the kubelet projects them:
/// a token of [`SERVICE_ACCOUNT`] for the API server's default audience, renewed by the
/// kubelet, beside `ca.crt` from `kube-root-ca.crt`.
///
/// Chosen over `automountServiceAccountToken: true`: the token reaches the LiteLLM container
/// only and at a path the guard names, its lifetime is set here, and the rendered Pod spec
/// says exactly what it mounts (no admission plugin adds a volume behind the operator's back).
fn api_token_volume() -> Volume {
    Volume {
        name: "api-token".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        expiration_seconds: Some(TOKEN_SECONDS),
                        audience: None,
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: ROOT_CA_CONFIG_MAP.into(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".into(),
                            path: "ca.crt".into(),
                            mode: None,
                        }]),
                        optional: None,
                    }),
                    ..VolumeProjection::default()
                },
            ]),
            default_mode: None,
        }),
        ..Volume::default()
    }
}

/// The gateway's ServiceAccount and its one permission: get, list and watch the budget
/// actions ConfigMap of its own namespace, by name, and nothing else.
///
/// A list or watch is authorised against `resourceNames` when it selects exactly that name
/// with `fieldSelector=metadata.name=<name>`: the API server then sets the request's name
/// from the selector (kubernetes/kubernetes,
/// staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go, `NewRequestInfo`:
/// `opts.FieldSelector.RequiresExactMatch("metadata.name")` → `requestInfo.Name`, for the
/// verbs list and watch). The guard's requests are of that form; any other list is refused.
pub fn actions_reader(owner: &Owner, namespace: &str) -> Vec<Child> {
    let meta = |name: &str| owner.meta(COMPONENT, name, Some(namespace));
    let account = ServiceAccount {
        metadata: meta(SERVICE_ACCOUNT),
        // Pods of this account get no token unless they project one (the gateway does).
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    };
    let role = Role {
        metadata: meta(ACTIONS_READER),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            resource_names: Some(vec![ACTIONS_CONFIG_MAP.into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            non_resource_urls: None,
        }]),
    };
    let binding = RoleBinding {
        metadata: meta(ACTIONS_READER),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: ACTIONS_READER.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: SERVICE_ACCOUNT.into(),
            namespace: Some(namespace.to_owned()),
            api_group: None,
        }]),
    };
    vec![
        Child::from(account),
        Child::from(role),
        Child::from(binding),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::{example_region, owner};

    fn template_hash(children: &[Child]) -> String {
        children
            .iter()
            .find_map(|c| match c {
                Child::Deployment(d) => d
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.metadata.as_ref())
                    .and_then(|m| m.annotations.as_ref())
                    .map(|a| a[CONFIG_HASH_ANNOTATION].clone()),
                _ => None,
            })
            .expect("deployment with a config hash")
    }

    #[test]
    fn the_deployment_rolls_exactly_when_the_config_changes() {
        let region = example_region("eu");
        let a = gateway_children(&region, &owner("eu"), "model_list: []\n", Vec::new());
        let same = gateway_children(&region, &owner("eu"), "model_list: []\n", Vec::new());
        let other = gateway_children(&region, &owner("eu"), "model_list: [x]\n", Vec::new());
        assert_eq!(template_hash(&a), template_hash(&same));
        assert_ne!(template_hash(&a), template_hash(&other));
    }

    #[test]
    fn two_replicas_get_a_disruption_budget_and_the_cost_map_stays_local() {
        let region = example_region("eu");
        let children = gateway_children(&region, &owner("eu"), "model_list: []\n", Vec::new());
        assert!(
            children
                .iter()
                .any(|c| matches!(c, Child::PodDisruptionBudget(_)))
        );
        let json = serde_json::to_string(&children).expect("json");
        assert!(json.contains("LITELLM_LOCAL_MODEL_COST_MAP"));
        assert!(json.contains("europe-west9"), "pinned to the region");
    }
    fn pod(children: &[Child]) -> PodSpec {
        children
            .iter()
            .find_map(|c| match c {
                Child::Deployment(d) => d.spec.as_ref().and_then(|s| s.template.spec.clone()),
                _ => None,
            })
            .expect("gateway pod")
    }

    #[test]
    fn the_egress_proxy_is_in_the_gateways_environment() {
        let region = example_region("eu");
        let children = gateway_children(&region, &owner("eu"), "model_list: []\n", Vec::new());
        let env: BTreeMap<String, Option<String>> = pod(&children).containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        assert_eq!(
            env["HTTPS_PROXY"].as_deref(),
            Some("http://egress-proxy.egress-eu.svc:3128")
        );
        assert_eq!(env["https_proxy"], env["HTTPS_PROXY"]);
        assert_eq!(
            env["NO_PROXY"].as_deref(),
            Some(
                ".svc,.cluster.local,localhost,127.0.0.1,.eu.observability.example.com,hf-mirror.eu.example.com"
            )
        );
        let mut none = example_region("eu");
        none.spec.egress = None;
        assert!(proxy_env(&none).is_empty());
    }

    #[test]
    fn the_gateway_runs_as_the_non_root_images_user_and_defaults_to_the_tested_release() {
        let region = example_region("eu");
        let children = gateway_children(&region, &owner("eu"), "model_list: []\n", Vec::new());
        let pod = pod(&children);
        assert_eq!(
            pod.security_context.as_ref().and_then(|s| s.run_as_user),
            Some(65534)
        );
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some(&*format!(
                "ghcr.io/berriai/litellm-non_root:v{}",
                crate::api::versions::version("LITELLM_VERSION").expect("in versions.env")
            ))
        );
    }

    #[test]
    fn the_gateway_may_read_its_actions_configmap_and_nothing_else() {
        let region = example_region("eu");
        let children = gateway_children(&region, &owner("eu"), "model_list: []\n", Vec::new());
        let role = children
            .iter()
            .find_map(|c| match c {
                Child::Role(r) => Some(r.clone()),
                _ => None,
            })
            .expect("a Role");
        let rules = role.rules.clone().unwrap_or_default();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].api_groups.as_deref(), Some(&[String::new()][..]));
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["configmaps".to_owned()][..])
        );
        assert_eq!(
            rules[0].resource_names.as_deref(),
            Some(&[ACTIONS_CONFIG_MAP.to_owned()][..])
        );
        assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
        let binding = children
            .iter()
            .find_map(|c| match c {
                Child::RoleBinding(b) => Some(b.clone()),
                _ => None,
            })
            .expect("a RoleBinding");
        assert_eq!(binding.role_ref.name, ACTIONS_READER);
        let subject = &binding.subjects.clone().unwrap_or_default()[0];
        assert_eq!(
            (
                subject.kind.as_str(),
                subject.name.as_str(),
                subject.namespace.as_deref()
            ),
            ("ServiceAccount", SERVICE_ACCOUNT, Some("sovereign-eu"))
        );
        let account = children
            .iter()
            .find_map(|c| match c {
                Child::ServiceAccount(a) => Some(a.clone()),
                _ => None,
            })
            .expect("a ServiceAccount");
        assert_eq!(account.automount_service_account_token, Some(false));
        assert_eq!(account.metadata.name.as_deref(), Some(SERVICE_ACCOUNT));

        // The pod runs as that account, with a projected token in the LiteLLM container only,
        // and tells the guard where its ConfigMap, token and CA are.
        let pod = pod(&children);
        assert_eq!(pod.service_account_name.as_deref(), Some(SERVICE_ACCOUNT));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "api-token")
            .and_then(|v| v.projected.clone())
            .expect("a projected token volume");
        let sources = volume.sources.unwrap_or_default();
        assert!(sources.iter().any(|s| {
            s.service_account_token
                .as_ref()
                .is_some_and(|t| t.path == "token" && t.expiration_seconds == Some(TOKEN_SECONDS))
        }));
        assert!(sources.iter().any(|s| {
            s.config_map
                .as_ref()
                .is_some_and(|c| c.name == ROOT_CA_CONFIG_MAP)
        }));
        let env: BTreeMap<String, Option<String>> = pod.containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        assert_eq!(
            env["SOVEREIGN_ACTIONS_CONFIGMAP"].as_deref(),
            Some("sovereign-eu/sovereign-budget-actions")
        );
        assert_eq!(
            env["SOVEREIGN_API_TOKEN_FILE"].as_deref(),
            Some("/var/run/secrets/sovereign/api/token")
        );
        assert!(
            pod.containers[0]
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == "api-token" && m.read_only == Some(true))
        );
    }

    /// Defect (found by running the rendered pod): liveness (3 × 10 s) killed LiteLLM, which
    /// takes ~30 s to listen, before it ever started — a crash loop.
    #[test]
    fn a_startup_probe_holds_liveness_off_while_litellm_starts() {
        let region = example_region("eu");
        let children = gateway_children(&region, &owner("eu"), "model_list: []\n", Vec::new());
        let container = &pod(&children).containers[0];
        let startup = container.startup_probe.as_ref().expect("a startup probe");
        let budget = startup.period_seconds.unwrap_or(10) * startup.failure_threshold.unwrap_or(3);
        assert!(budget >= 180, "startup budget {budget} s");
        assert_eq!(
            startup
                .http_get
                .as_ref()
                .map(|h| (h.path.clone(), h.port.clone())),
            Some((
                Some("/health/liveliness".to_owned()),
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(4000)
            ))
        );
        let liveness = container.liveness_probe.as_ref().expect("liveness");
        assert!(
            liveness.period_seconds.unwrap_or(10) * liveness.failure_threshold.unwrap_or(3)
                < budget,
            "liveness alone would kill a slow start"
        );
    }
}
