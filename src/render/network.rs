//! The region namespace and the NetworkPolicies that fence it.
//!
//! The namespace enforces Pod Security `restricted`, and traffic is denied by default in both
//! directions; what is allowed is listed one policy per reason, so that `kubectl get netpol`
//! reads like the design: DNS, traffic inside the namespace, the egress CIDRs of the region, and
//! clients calling the gateway.
//!
//! `egress.hosts` is deliberately not rendered: a Kubernetes NetworkPolicy matches IP addresses
//! and ports only, never DNS names, so a host name cannot be expressed here. External APIs are
//! reached either through the region's egress proxy (`egress.proxy`: the gateway pods may
//! connect to the proxy's pods, and the proxy allows exactly the hosts) or through address
//! ranges listed in `egress.cidrs`.
//!
//! Ingress besides the namespace itself: clients of every namespace on the gateway's port, and
//! the scrapers (`monitoring.scrapeNamespaces`: the operator, Prometheus) on the vLLM port.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::k8s::match_labels;
use super::{Child, Owner};
use crate::api::labels;
use crate::api::region::{EgressProxy, SovereignRegion};

/// `app.kubernetes.io/component` of the region namespace.
pub const NAMESPACE_COMPONENT: &str = "namespace";
/// `app.kubernetes.io/component` of the NetworkPolicies.
pub const NETWORK_COMPONENT: &str = "network";
/// `app.kubernetes.io/component` the gateway pods carry; the gateway ingress policy selects them.
pub const GATEWAY_COMPONENT: &str = "gateway";
/// Port the gateway (LiteLLM proxy) listens on.
pub const GATEWAY_PORT: i32 = 4000;

/// Name of the policy that denies all ingress and egress not allowed by another policy.
pub const DEFAULT_DENY: &str = "default-deny";
/// Name of the policy that allows DNS lookups through the cluster DNS.
pub const ALLOW_DNS: &str = "allow-dns";
/// Name of the policy that allows the region's pods to talk to each other.
pub const ALLOW_SAME_NAMESPACE: &str = "allow-same-namespace";
/// Name of the policy that allows egress to `egress.cidrs`.
pub const ALLOW_EGRESS_CIDRS: &str = "allow-egress-cidrs";
/// Name of the policy that lets clients in any namespace call the gateway.
pub const ALLOW_GATEWAY_INGRESS: &str = "allow-gateway-ingress";
/// Name of the policy that lets the operator and Prometheus scrape the vLLM servers.
pub const ALLOW_METRICS_SCRAPES: &str = "allow-metrics-scrapes";
/// Name of the policy that lets the gateway reach the region's egress proxy.
pub const ALLOW_EGRESS_PROXY: &str = "allow-egress-proxy";
/// `app.kubernetes.io/component` of the vLLM pods (the contract with the vLLM renderer).
pub const INFERENCE_COMPONENT: &str = "inference";
/// Port of the vLLM servers (API and `/metrics`).
pub const VLLM_PORT: i32 = 8000;

/// The cluster DNS setups the DNS policy admits, as (namespace, pod label, value, port): the
/// CoreDNS / kube-dns pods of kubeadm, EKS, GKE, AKS, k3s and most distributions
/// (`k8s-app=kube-dns` in kube-system), NodeLocal DNSCache's pods (`k8s-app=node-local-dns`),
/// and OpenShift's DNS daemon set (port 5353 behind the Service's 53). A Service IP is
/// translated to a pod before NetworkPolicy applies, so these pods are what a lookup reaches.
pub const DNS_PEERS: [(&str, &str, &str, i32); 3] = [
    ("kube-system", "k8s-app", "kube-dns", 53),
    ("kube-system", "k8s-app", "node-local-dns", 53),
    (
        "openshift-dns",
        "dns.operator.openshift.io/daemonset-dns",
        "default",
        5353,
    ),
];
/// NodeLocal DNSCache's link-local listen address: its pods use the host network and answer
/// there, where no pod selector matches them, so the address itself is admitted (port 53).
pub const NODE_LOCAL_DNS_IP: &str = "169.254.20.10/32";

/// Pod Security admission labels: `restricted` enforced, audited and warned, at the latest
/// version so new restrictions apply as the cluster is upgraded.
const POD_SECURITY: [(&str, &str); 4] = [
    ("pod-security.kubernetes.io/enforce", "restricted"),
    ("pod-security.kubernetes.io/enforce-version", "latest"),
    ("pod-security.kubernetes.io/audit", "restricted"),
    ("pod-security.kubernetes.io/warn", "restricted"),
];

/// The region Namespace followed by its NetworkPolicies.
///
/// The Namespace carries the managed labels but, unlike every other child, **no owner
/// reference**: the region's data (vector store volumes, backends, budgets) lives in it, and
/// deleting a SovereignRegion must never cascade into deleting that data. Removing the namespace
/// is a deliberate human act.
pub fn namespace_and_policies(region: &SovereignRegion, owner: &Owner) -> Vec<Child> {
    let ns = region.stack_namespace();
    let mut children = vec![Child::from(namespace(region, owner, &ns))];
    children.extend(policies(region, owner, &ns).into_iter().map(Child::from));
    children
}

/// The region namespace, labelled with its home region and Pod Security `restricted`.
fn namespace(region: &SovereignRegion, owner: &Owner, ns: &str) -> Namespace {
    let mut metadata = owner.meta(NAMESPACE_COMPONENT, ns, None);
    // Data lives here: see `namespace_and_policies` for why there is no owner reference.
    metadata.owner_references = None;
    let stamped = metadata.labels.get_or_insert_with(BTreeMap::new);
    // Residency rules key on the namespace's home region, so it is the region's own name (the
    // owner's region is the same in practice; the resource's name is the source of truth).
    let home = region.metadata.name.as_deref().unwrap_or(&owner.region);
    stamped.insert(labels::REGION.to_owned(), home.to_owned());
    for (key, value) in POD_SECURITY {
        stamped.insert(key.to_owned(), value.to_owned());
    }
    Namespace {
        metadata,
        ..Namespace::default()
    }
}

/// The NetworkPolicies of the region namespace, in a fixed order.
fn policies(region: &SovereignRegion, owner: &Owner, ns: &str) -> Vec<NetworkPolicy> {
    let mut policies = vec![
        default_deny(owner, ns),
        allow_dns(owner, ns),
        allow_same_namespace(owner, ns),
    ];
    let cidrs = region
        .spec
        .egress
        .as_ref()
        .map(|e| e.cidrs.as_slice())
        .unwrap_or_default();
    // An empty `to` list would mean "everywhere", so no CIDRs means no policy at all.
    if !cidrs.is_empty() {
        policies.push(allow_egress_cidrs(owner, ns, cidrs));
    }
    if let Some(proxy) = region.spec.egress.as_ref().and_then(|e| e.proxy.as_ref()) {
        policies.push(allow_egress_proxy(owner, ns, proxy));
    }
    policies.push(allow_gateway_ingress(owner, ns));
    let scrapers = &region.spec.monitoring.scrape_namespaces;
    // No namespaces, no policy: an empty `from` would admit every source.
    if !scrapers.is_empty() {
        policies.push(allow_metrics_scrapes(owner, ns, scrapers));
    }
    policies
}

/// A peer: pods with `labels` in the namespace named `namespace`.
fn pods_in(namespace: &str, labels: &BTreeMap<String, String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(match_labels(&BTreeMap::from([(
            NAMESPACE_NAME_LABEL.to_owned(),
            namespace.to_owned(),
        )]))),
        pod_selector: Some(match_labels(labels)),
        ip_block: None,
    }
}

/// The label every namespace carries with its own name (set by the API server).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The vLLM servers' port 8000 — where vLLM serves `/metrics` next to its API — from the pods
/// of `namespaces`: the operator's usage collector scrapes the token counters there (the
/// `(direct)` attribution needs them), and Prometheus the queue length the autoscaler scales
/// on. A NetworkPolicy cannot tell `/metrics` from `/v1`: these namespaces can reach the API as
/// well, and tokens they are served count as `(direct)`.
fn allow_metrics_scrapes(owner: &Owner, ns: &str, namespaces: &[String]) -> NetworkPolicy {
    let vllm = BTreeMap::from([
        (labels::COMPONENT.to_owned(), INFERENCE_COMPONENT.to_owned()),
        (labels::REGION.to_owned(), owner.region.clone()),
    ]);
    let from = namespaces
        .iter()
        .map(|namespace| pods_in(namespace, &BTreeMap::new()))
        .collect();
    policy(
        owner,
        ns,
        ALLOW_METRICS_SCRAPES,
        NetworkPolicySpec {
            pod_selector: Some(match_labels(&vllm)),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(from),
                ports: Some(vec![port("TCP", VLLM_PORT)]),
            }]),
            egress: None,
        },
    )
}

/// The gateway pods — only they call external APIs — to the egress proxy's pods on its port.
/// The proxy decides which host names pass (it should allow exactly `egress.hosts`).
fn allow_egress_proxy(owner: &Owner, ns: &str, proxy: &EgressProxy) -> NetworkPolicy {
    policy(
        owner,
        ns,
        ALLOW_EGRESS_PROXY,
        NetworkPolicySpec {
            pod_selector: Some(match_labels(&owner.selector(GATEWAY_COMPONENT))),
            policy_types: Some(vec!["Egress".to_owned()]),
            egress: Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![pods_in(&proxy.namespace, &proxy.pod_labels)]),
                ports: Some(vec![port("TCP", proxy.port)]),
            }]),
            ingress: None,
        },
    )
}

/// A policy named `name` in `ns` with the given spec.
fn policy(owner: &Owner, ns: &str, name: &str, spec: NetworkPolicySpec) -> NetworkPolicy {
    NetworkPolicy {
        metadata: owner.meta(NETWORK_COMPONENT, name, Some(ns)),
        spec: Some(spec),
    }
}

/// The selector that matches every pod (of the namespace, or every namespace, by context).
fn everything() -> LabelSelector {
    LabelSelector::default()
}

/// A TCP or UDP port.
fn port(protocol: &str, number: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.to_owned()),
        port: Some(IntOrString::Int(number)),
        end_port: None,
    }
}

/// Selects every pod and lists both policy types with no rules: nothing gets in or out unless
/// another policy allows it (policies are additive).
fn default_deny(owner: &Owner, ns: &str) -> NetworkPolicy {
    policy(
        owner,
        ns,
        DEFAULT_DENY,
        NetworkPolicySpec {
            pod_selector: Some(everything()),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: None,
            egress: None,
        },
    )
}

/// DNS to the cluster DNS only, not to port 53 anywhere (which would let pods use an outside
/// resolver and leak the names they look up): the pods of every common setup ([`DNS_PEERS`]),
/// each on its own port, and NodeLocal DNSCache's link-local address. A cluster whose DNS is
/// none of these lists its resolver's addresses in `egress.cidrs`.
fn allow_dns(owner: &Owner, ns: &str) -> NetworkPolicy {
    let dns_ports = |number: i32| Some(vec![port("UDP", number), port("TCP", number)]);
    let mut rules: Vec<NetworkPolicyEgressRule> = DNS_PEERS
        .iter()
        .map(|(namespace, key, value, number)| NetworkPolicyEgressRule {
            // Both selectors in one peer: DNS pods *in* that namespace, not either of them.
            to: Some(vec![pods_in(
                namespace,
                &BTreeMap::from([((*key).to_owned(), (*value).to_owned())]),
            )]),
            ports: dns_ports(*number),
        })
        .collect();
    rules.push(NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: NODE_LOCAL_DNS_IP.to_owned(),
                except: None,
            }),
            namespace_selector: None,
            pod_selector: None,
        }]),
        ports: dns_ports(53),
    });
    policy(
        owner,
        ns,
        ALLOW_DNS,
        NetworkPolicySpec {
            pod_selector: Some(everything()),
            policy_types: Some(vec!["Egress".to_owned()]),
            egress: Some(rules),
            ingress: None,
        },
    )
}

/// The stack's pods call each other (gateway → vLLM, gateway → collector, …): allow any traffic
/// between pods of the namespace. A peer with only a pod selector means "in this namespace".
fn allow_same_namespace(owner: &Owner, ns: &str) -> NetworkPolicy {
    let same_namespace = || NetworkPolicyPeer {
        pod_selector: Some(everything()),
        namespace_selector: None,
        ip_block: None,
    };
    policy(
        owner,
        ns,
        ALLOW_SAME_NAMESPACE,
        NetworkPolicySpec {
            pod_selector: Some(everything()),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![same_namespace()]),
                ports: None,
            }]),
            egress: Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![same_namespace()]),
                ports: None,
            }]),
        },
    )
}

/// Egress to the region's declared CIDRs (in-region APIs, the trace backend, …), all ports.
/// The CIDRs are passed through as written; the API server validates them when the policy is
/// applied, and the controller reports its refusal.
fn allow_egress_cidrs(owner: &Owner, ns: &str, cidrs: &[String]) -> NetworkPolicy {
    let to = cidrs
        .iter()
        .map(|cidr| NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: cidr.clone(),
                except: None,
            }),
            namespace_selector: None,
            pod_selector: None,
        })
        .collect();
    policy(
        owner,
        ns,
        ALLOW_EGRESS_CIDRS,
        NetworkPolicySpec {
            pod_selector: Some(everything()),
            policy_types: Some(vec!["Egress".to_owned()]),
            egress: Some(vec![NetworkPolicyEgressRule {
                to: Some(to),
                ports: None,
            }]),
            ingress: None,
        },
    )
}

/// Clients in any namespace call the gateway on its port. Only the gateway pods are opened: the
/// vLLM servers, vector store and collector stay reachable from inside the namespace only, so
/// nothing bypasses the gateway's routing and residency rules.
///
/// An empty namespace selector matches pods of every namespace, but not traffic from outside the
/// cluster's pod network; external clients come in through an ingress controller, which runs in a
/// namespace and is therefore covered.
fn allow_gateway_ingress(owner: &Owner, ns: &str) -> NetworkPolicy {
    policy(
        owner,
        ns,
        ALLOW_GATEWAY_INGRESS,
        NetworkPolicySpec {
            pod_selector: Some(match_labels(&owner.selector(GATEWAY_COMPONENT))),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(everything()),
                    pod_selector: None,
                    ip_block: None,
                }]),
                ports: Some(vec![port("TCP", GATEWAY_PORT)]),
            }]),
            egress: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::{self, example_region};

    /// The EU region's owner with an owner reference, as the controller renders it.
    fn owner() -> Owner {
        Owner {
            region: "eu".into(),
            instance: "eu".into(),
            reference: Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "sovereign.ai/v1alpha1".into(),
                    kind: "SovereignRegion".into(),
                    name: "eu".into(),
                    uid: "0000-eu".into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                },
            ),
        }
    }

    fn policies_of(children: &[Child]) -> BTreeMap<String, NetworkPolicy> {
        children
            .iter()
            .filter_map(|c| match c {
                Child::NetworkPolicy(p) => {
                    Some((p.metadata.name.clone().expect("named"), p.as_ref().clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn spec(policy: &NetworkPolicy) -> &NetworkPolicySpec {
        policy.spec.as_ref().expect("spec")
    }

    #[test]
    fn namespace_is_labelled_restricted_and_not_owned() {
        let children = namespace_and_policies(&example_region("eu"), &owner());
        let Child::Namespace(ns) = &children[0] else {
            panic!("the namespace comes first, got {}", children[0].describe());
        };
        assert_eq!(ns.metadata.name.as_deref(), Some("sovereign-eu"));
        assert!(
            ns.metadata.namespace.is_none(),
            "namespaces are cluster-scoped"
        );
        let labels = ns.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels["sovereign.ai/region"], "eu");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "sovereign-operator");
        assert_eq!(labels["app.kubernetes.io/component"], "namespace");
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
        assert_eq!(
            labels["pod-security.kubernetes.io/enforce-version"],
            "latest"
        );
        assert_eq!(labels["pod-security.kubernetes.io/audit"], "restricted");
        assert_eq!(labels["pod-security.kubernetes.io/warn"], "restricted");
        assert!(
            ns.metadata.owner_references.is_none(),
            "deleting the region must not delete the namespace and its data"
        );
    }

    #[test]
    fn namespace_defaults_to_sovereign_name() {
        let mut r = example_region("eu");
        r.spec.namespace = None;
        let children = namespace_and_policies(&r, &owner());
        assert_eq!(children[0].describe(), "Namespace/sovereign-eu");
        for child in &children[1..] {
            assert_eq!(
                child.kind_and_meta().1.namespace.as_deref(),
                Some("sovereign-eu")
            );
        }
    }

    #[test]
    fn policies_are_owned_labelled_and_in_the_region_namespace() {
        let children = namespace_and_policies(&example_region("eu"), &owner());
        let policies = policies_of(&children);
        assert_eq!(
            policies.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                ALLOW_DNS,
                ALLOW_EGRESS_CIDRS,
                ALLOW_EGRESS_PROXY,
                ALLOW_GATEWAY_INGRESS,
                ALLOW_METRICS_SCRAPES,
                ALLOW_SAME_NAMESPACE,
                DEFAULT_DENY
            ]
        );
        for policy in policies.values() {
            assert_eq!(policy.metadata.namespace.as_deref(), Some("sovereign-eu"));
            let labels = policy.metadata.labels.as_ref().expect("labels");
            assert_eq!(labels["app.kubernetes.io/component"], "network");
            assert_eq!(labels["sovereign.ai/region"], "eu");
            assert_eq!(
                policy.metadata.owner_references.as_ref().map(Vec::len),
                Some(1)
            );
        }
    }

    #[test]
    fn default_deny_selects_everything_both_ways() {
        let policies = policies_of(&namespace_and_policies(&example_region("eu"), &owner()));
        let deny = spec(&policies[DEFAULT_DENY]);
        assert_eq!(deny.pod_selector, Some(LabelSelector::default()));
        assert_eq!(
            deny.policy_types.as_deref(),
            Some(&["Ingress".to_owned(), "Egress".to_owned()][..])
        );
        assert!(deny.ingress.is_none() && deny.egress.is_none());
    }

    #[test]
    fn dns_goes_to_kube_dns_only() {
        let policies = policies_of(&namespace_and_policies(&example_region("eu"), &owner()));
        let rule = &spec(&policies[ALLOW_DNS]).egress.as_ref().expect("egress")[0];
        let peer = &rule.to.as_ref().expect("to")[0];
        let ns_labels = peer
            .namespace_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .expect("namespace selector");
        assert_eq!(ns_labels["kubernetes.io/metadata.name"], "kube-system");
        let pod_labels = peer
            .pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .expect("pod selector");
        assert_eq!(pod_labels["k8s-app"], "kube-dns");
        let ports: Vec<_> = rule
            .ports
            .as_ref()
            .expect("ports")
            .iter()
            .map(|p| (p.protocol.clone().expect("protocol"), p.port.clone()))
            .collect();
        assert_eq!(
            ports,
            [
                ("UDP".to_owned(), Some(IntOrString::Int(53))),
                ("TCP".to_owned(), Some(IntOrString::Int(53)))
            ]
        );
    }

    #[test]
    fn same_namespace_traffic_is_allowed_both_ways_and_only_there() {
        let policies = policies_of(&namespace_and_policies(&example_region("eu"), &owner()));
        let same = spec(&policies[ALLOW_SAME_NAMESPACE]);
        let from = &same.ingress.as_ref().expect("ingress")[0]
            .from
            .as_ref()
            .expect("from")[0];
        let to = &same.egress.as_ref().expect("egress")[0]
            .to
            .as_ref()
            .expect("to")[0];
        for peer in [from, to] {
            assert_eq!(peer.pod_selector, Some(LabelSelector::default()));
            assert!(peer.namespace_selector.is_none(), "no other namespace");
            assert!(peer.ip_block.is_none());
        }
    }

    #[test]
    fn egress_cidrs_are_one_policy_with_an_ip_block_each() {
        let mut r = example_region("eu");
        let egress = r.spec.egress.as_mut().expect("example has egress");
        egress.cidrs.push("192.0.2.0/24".to_owned());
        let policies = policies_of(&namespace_and_policies(&r, &owner()));
        let rule = &spec(&policies[ALLOW_EGRESS_CIDRS])
            .egress
            .as_ref()
            .expect("egress")[0];
        let cidrs: Vec<_> = rule
            .to
            .as_ref()
            .expect("to")
            .iter()
            .map(|p| p.ip_block.as_ref().expect("ip block").cidr.as_str())
            .collect();
        assert_eq!(cidrs, ["10.20.0.0/16", "192.0.2.0/24"]);
    }

    #[test]
    fn egress_hosts_render_nothing_and_no_cidrs_means_no_cidr_policy() {
        let mut r = example_region("eu");
        r.spec
            .egress
            .as_mut()
            .expect("example has egress")
            .cidrs
            .clear();
        let children = namespace_and_policies(&r, &owner());
        let policies = policies_of(&children);
        assert!(!policies.contains_key(ALLOW_EGRESS_CIDRS));
        let json = serde_json::to_string(&children).expect("json");
        assert!(
            !json.contains("api.mistral.ai"),
            "host names cannot be expressed in a NetworkPolicy"
        );
        r.spec.egress.as_mut().expect("egress").proxy = None;
        let without_proxy = namespace_and_policies(&r, &owner()).len();
        assert_eq!(without_proxy, children.len() - 1, "the proxy policy goes");
        r.spec.egress = None;
        assert_eq!(namespace_and_policies(&r, &owner()).len(), without_proxy);
    }

    #[test]
    fn gateway_is_open_to_every_namespace_on_its_port_only() {
        let policies = policies_of(&namespace_and_policies(&example_region("eu"), &owner()));
        let gateway = spec(&policies[ALLOW_GATEWAY_INGRESS]);
        assert_eq!(
            gateway
                .pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(owner().selector("gateway"))
        );
        assert!(gateway.egress.is_none());
        let rule = &gateway.ingress.as_ref().expect("ingress")[0];
        let peer = &rule.from.as_ref().expect("from")[0];
        assert_eq!(peer.namespace_selector, Some(LabelSelector::default()));
        assert_eq!(
            rule.ports.as_ref().expect("ports")[0].port,
            Some(IntOrString::Int(4000))
        );
    }

    #[test]
    fn india_gets_its_own_namespace_and_cidrs() {
        let r = example_region("in");
        let children = namespace_and_policies(&r, &test_support::owner("in"));
        assert_eq!(children[0].describe(), "Namespace/sovereign-in");
        let policies = policies_of(&children);
        let rule = &spec(&policies[ALLOW_EGRESS_CIDRS])
            .egress
            .as_ref()
            .expect("egress")[0];
        assert_eq!(
            rule.to.as_ref().expect("to")[0]
                .ip_block
                .as_ref()
                .expect("ip block")
                .cidr,
            "10.40.0.0/16"
        );
    }

    fn dns_destinations(policies: &BTreeMap<String, NetworkPolicy>) -> Vec<(String, i32)> {
        let mut out = Vec::new();
        for rule in spec(&policies[ALLOW_DNS]).egress.iter().flatten() {
            let ports: Vec<i32> = rule
                .ports
                .iter()
                .flatten()
                .filter_map(|p| match p.port {
                    Some(IntOrString::Int(n)) => Some(n),
                    _ => None,
                })
                .collect();
            for peer in rule.to.iter().flatten() {
                let what = match (&peer.ip_block, &peer.pod_selector) {
                    (Some(block), _) => block.cidr.clone(),
                    (None, Some(pods)) => format!(
                        "{}/{:?}",
                        peer.namespace_selector
                            .as_ref()
                            .and_then(|n| n.match_labels.as_ref())
                            .map(|l| l["kubernetes.io/metadata.name"].clone())
                            .unwrap_or_default(),
                        pods.match_labels.clone().unwrap_or_default()
                    ),
                    _ => "everywhere".to_owned(),
                };
                for port in &ports {
                    out.push((what.clone(), *port));
                }
            }
        }
        out
    }

    /// Defect: only `k8s-app=kube-dns` was admitted, so NodeLocal DNSCache and OpenShift DNS
    /// lookups failed.
    #[test]
    fn dns_admits_the_common_cluster_dns_setups() {
        let policies = policies_of(&namespace_and_policies(&example_region("eu"), &owner()));
        let destinations = dns_destinations(&policies);
        for wanted in [
            ("kube-system/{\"k8s-app\": \"kube-dns\"}".to_owned(), 53),
            (
                "kube-system/{\"k8s-app\": \"node-local-dns\"}".to_owned(),
                53,
            ),
            ("169.254.20.10/32".to_owned(), 53),
            (
                "openshift-dns/{\"dns.operator.openshift.io/daemonset-dns\": \"default\"}"
                    .to_owned(),
                5353,
            ),
        ] {
            assert!(
                destinations.contains(&wanted),
                "{wanted:?} in {destinations:?}"
            );
        }
        // Never port 53 anywhere: every rule names its peers.
        assert!(!destinations.iter().any(|(what, _)| what == "everywhere"));
    }

    /// Defect: the vLLM servers admitted only their own namespace, so the operator's usage
    /// collector (and Prometheus) could not scrape `:8000/metrics`.
    #[test]
    fn the_operator_and_prometheus_may_scrape_the_vllm_servers() {
        let policies = policies_of(&namespace_and_policies(&example_region("eu"), &owner()));
        let scrapes = spec(&policies[ALLOW_METRICS_SCRAPES]);
        assert_eq!(
            scrapes
                .pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(BTreeMap::from([
                (
                    "app.kubernetes.io/component".to_owned(),
                    "inference".to_owned()
                ),
                ("sovereign.ai/region".to_owned(), "eu".to_owned()),
            ]))
        );
        let rule = &scrapes.ingress.as_ref().expect("ingress")[0];
        let namespaces: Vec<String> = rule
            .from
            .iter()
            .flatten()
            .map(|p| {
                p.namespace_selector
                    .as_ref()
                    .and_then(|n| n.match_labels.as_ref())
                    .map(|l| l["kubernetes.io/metadata.name"].clone())
                    .expect("a named namespace")
            })
            .collect();
        assert_eq!(namespaces, ["sovereign-system", "monitoring"]);
        assert_eq!(
            rule.ports.as_ref().expect("ports")[0].port,
            Some(IntOrString::Int(8000))
        );

        let mut r = example_region("eu");
        r.spec.monitoring.scrape_namespaces = vec!["ops".into()];
        let policies = policies_of(&namespace_and_policies(&r, &owner()));
        let from = &spec(&policies[ALLOW_METRICS_SCRAPES])
            .ingress
            .as_ref()
            .expect("ingress")[0]
            .from;
        assert_eq!(from.as_ref().map(Vec::len), Some(1));
        r.spec.monitoring.scrape_namespaces.clear();
        let policies = policies_of(&namespace_and_policies(&r, &owner()));
        assert!(
            !policies.contains_key(ALLOW_METRICS_SCRAPES),
            "an empty list must not admit everyone"
        );
    }

    /// Defect: external backends were unreachable — host names cannot be NetworkPolicy peers.
    /// The gateway reaches them through the region's egress proxy.
    #[test]
    fn the_gateway_reaches_the_egress_proxy_and_nothing_else_does() {
        let policies = policies_of(&namespace_and_policies(&example_region("eu"), &owner()));
        let proxy = spec(&policies[ALLOW_EGRESS_PROXY]);
        assert_eq!(
            proxy
                .pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(owner().selector("gateway")),
            "only the gateway calls external APIs"
        );
        let rule = &proxy.egress.as_ref().expect("egress")[0];
        let peer = &rule.to.as_ref().expect("to")[0];
        assert_eq!(
            peer.namespace_selector
                .as_ref()
                .and_then(|n| n.match_labels.clone()),
            Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_owned(),
                "egress-eu".to_owned()
            )]))
        );
        assert_eq!(
            peer.pod_selector
                .as_ref()
                .and_then(|p| p.match_labels.clone()),
            Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                "egress-proxy".to_owned()
            )]))
        );
        assert_eq!(
            rule.ports.as_ref().expect("ports")[0].port,
            Some(IntOrString::Int(3128))
        );
    }

    #[test]
    fn rendering_is_deterministic() {
        let a = serde_json::to_string(&namespace_and_policies(&example_region("eu"), &owner()))
            .expect("json");
        let b = serde_json::to_string(&namespace_and_policies(&example_region("eu"), &owner()))
            .expect("json");
        assert_eq!(a, b);
    }
}
