//! The in-cluster audit lists every kind of the residency kinds table
//! (`residency::kinds::KINDS`, `audited`), not a hand-written subset: a ReplicationController
//! that existed before its policy, and a VolumeReplication whose destination only its
//! VolumeReplicationClass declares (so the audit must list the classes too), are both reported
//! in the policy's status. The csi-addons kinds are installed as minimal CRDs (the schema is not
//! what is tested; the audit's discovery and listing are). Its own plane: it runs an operator
//! and installs an (Audit-mode) admission policy.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::runtime::conditions;
use kube::runtime::wait::await_condition;
use kube::{Api, Client};
use serde_json::{Value, json};
use sovereign_operator::api::ResidencyPolicy;

use crate::harness::{MANAGER, Operator, PATIENCE, PlaneId, apply, eventually, exclusive};

const POLICY: &str = "e2e-audit-kinds";
const CLASS: &str = "e2e-audited";
const GROUP: &str = "replication.storage.openshift.io";

/// A minimal CRD for a csi-addons kind (any fields kept).
fn crd(kind: &str, plural: &str, scope: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{GROUP}")},
        "spec": {
            "group": GROUP, "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.to_ascii_lowercase(),
                      "listKind": format!("{kind}List")},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    })
}

async fn install_csi_addons_crds(client: &Client) {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for (kind, plural, scope) in [
        ("VolumeReplication", "volumereplications", "Namespaced"),
        (
            "VolumeReplicationClass",
            "volumereplicationclasses",
            "Cluster",
        ),
    ] {
        let name = format!("{plural}.{GROUP}");
        apply(client, &crd(kind, plural, scope))
            .await
            .unwrap_or_else(|e| panic!("the API server refused CRD {name}: {e}"));
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(PATIENCE, established)
            .await
            .unwrap_or_else(|_| panic!("CRD {name} never became Established"))
            .unwrap_or_else(|e| panic!("watching CRD {name}: {e}"));
    }
}

#[tokio::test]
async fn the_audit_reports_replication_controllers_and_class_located_replications() {
    let plane = exclusive(PlaneId::Audit).await;
    plane.install_example().await;
    let client = plane.client().await;
    install_csi_addons_crds(&client).await;

    // Objects that exist before the policy (so admission never saw them under it).
    let objects = [
        json!({
            "apiVersion": "v1", "kind": "ReplicationController",
            "metadata": {"name": "e2e-audited-rc", "namespace": "sovereign-eu",
                         "labels": {"sovereign.ai/data-class": CLASS}},
            "spec": {"replicas": 0, "selector": {"app": "e2e-audited-rc"},
                "template": {"metadata": {"labels": {"app": "e2e-audited-rc"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
        }),
        json!({
            "apiVersion": format!("{GROUP}/v1alpha1"), "kind": "VolumeReplicationClass",
            "metadata": {"name": "e2e-mirror-to-us",
                         "annotations": {"topology.kubernetes.io/region": "us-east-1"}},
            "spec": {"provisioner": "rbd.csi.ceph.com"}
        }),
        // Its own annotation claims Paris; the class it names replicates to us-east-1, and
        // the class decides.
        json!({
            "apiVersion": format!("{GROUP}/v1alpha1"), "kind": "VolumeReplication",
            "metadata": {"name": "e2e-class-located", "namespace": "sovereign-eu",
                         "annotations": {"topology.kubernetes.io/region": "fr-par"}},
            "spec": {"volumeReplicationClass": "e2e-mirror-to-us", "replicationState": "primary",
                     "dataSource": {"apiGroup": "", "kind": "PersistentVolumeClaim", "name": "data"}}
        }),
    ];
    for object in &objects {
        apply(&client, object)
            .await
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", object["kind"]));
    }
    let policy = json!({
        "apiVersion": "sovereign.ai/v1alpha1", "kind": "ResidencyPolicy",
        "metadata": {"name": POLICY},
        "spec": {"mode": "Audit", "dataClasses": [CLASS]}
    });
    let policies = Api::<ResidencyPolicy>::all(client.clone());
    policies
        .patch(
            POLICY,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&policy),
        )
        .await
        .expect("create the audit policy");

    let operator = Operator::start(&plane, &["--region", "eu"]);
    let violations = eventually("the audit reports both objects", || async {
        let status = policies
            .get(POLICY)
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        let rc = status.violations.iter().any(|v| {
            v.kind == "ReplicationController"
                && v.name == "e2e-audited-rc"
                && v.rule == "pinWorkloads"
        });
        let replication = status.violations.iter().any(|v| {
            v.kind == "VolumeReplication"
                && v.name == "e2e-class-located"
                && v.rule == "forbidCrossBorderReplication"
                && v.message.contains("e2e-mirror-to-us")
                && v.message.contains("us-east-1")
        });
        if rc && replication {
            Ok(status.violations)
        } else {
            Err(format!("{:?}", status.violations))
        }
    })
    .await;
    eprintln!("audit violations of {POLICY}: {}", violations.len());
    operator.assert_no_forbidden();
    operator.stop();
}
