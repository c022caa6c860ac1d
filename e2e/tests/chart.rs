//! The Helm chart and the kustomize overlays against the real API server: everything they
//! render is accepted by a server-side dry run, and the operator's Pods satisfy the
//! `restricted` Pod Security profile (the API server warns about Deployments that would not).

use crate::harness::{RELEASE, RELEASE_NAMESPACE, ensure_namespace, helm, repo_path, shared};

async fn dry_run(manifests: &str, what: &str) {
    let (stdout, stderr) = shared().await.kubectl_with_input(
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--force-conflicts",
            "-f",
            "-",
        ],
        Some(manifests),
    );
    eprintln!("{what}:\n{stdout}");
    assert!(
        !stderr.contains("would violate PodSecurity"),
        "{what}: the operator's Pods would break Pod Security restricted: {stderr}"
    );
    assert!(
        stdout.contains("Deployment") || stdout.contains("deployment"),
        "{what}: {stdout}"
    );
}

#[tokio::test]
async fn the_chart_renders_what_the_api_server_accepts() {
    shared().await.install_crds().await;
    let client = shared().await.client().await;
    ensure_namespace(&client, RELEASE_NAMESPACE).await;
    // Pod Security warnings are what prove the restricted profile: make the namespace enforce
    // it, as the kustomize base's namespace does.
    shared().await.kubectl(&[
        "label",
        "--overwrite",
        "namespace",
        RELEASE_NAMESPACE,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    ]);
    let chart = repo_path("charts/sovereign-operator");
    let rendered = helm(&[
        "template",
        RELEASE,
        &chart.to_string_lossy(),
        "--kube-version",
        "1.33.0",
        "--namespace",
        RELEASE_NAMESPACE,
        "--include-crds",
        "--set",
        "regions={eu,in}",
    ]);
    assert!(rendered.contains("--region=eu") && rendered.contains("--region=in"));
    dry_run(&rendered, "helm template").await;
}

#[tokio::test]
async fn the_kustomize_overlays_render_what_the_api_server_accepts() {
    shared().await.install_crds().await;
    let client = shared().await.client().await;
    ensure_namespace(&client, RELEASE_NAMESPACE).await;
    for region in ["eu", "in"] {
        let overlay = repo_path(&format!("deploy/kustomize/overlays/{region}"));
        let (rendered, _) = shared()
            .await
            .kubectl_with_input(&["kustomize", &overlay.to_string_lossy()], None);
        assert!(
            rendered.contains(&format!("--region={region}")),
            "{rendered}"
        );
        dry_run(&rendered, &format!("overlay {region}")).await;
    }
}
