//! Leader election on the real control plane: two operator processes share a Lease; only the
//! leader writes. Killing the leader (SIGKILL, nothing released) while it converges the EU/India
//! example hands over to the standby, which finishes; a graceful stop (SIGTERM) releases the
//! Lease and the next standby takes over at once. Take-over times are printed, not asserted
//! (they depend on the machine); the ~15 s bound comes from the lease duration.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::ListParams;
use kube::{Api, Client};
use sovereign_operator::api::{InferenceBackend, SovereignRegion};

use crate::harness::{
    Exclusive, Operator, PlaneId, RELEASE_NAMESPACE, ensure_namespace, eventually, exclusive,
};
use crate::provisioning::EXAMPLE_BACKENDS;

const LEASE: &str = "sovereign-e2e-leader";

fn start(plane: &Exclusive) -> Operator {
    Operator::start(
        plane,
        &[
            "--region",
            "eu",
            "--region",
            "in",
            "--leader-election",
            "--leader-election-id",
            LEASE,
        ],
    )
}

/// How many Deployments the operator makes for the example: what `render` prints for it.
fn example_deployments() -> usize {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sovereign-operator"))
        .arg("render")
        .arg("-f")
        .arg(crate::harness::repo_path("deploy/examples/eu-india"))
        .output()
        .expect("sovereign-operator render runs");
    assert!(
        output.status.success(),
        "render: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| *l == "kind: Deployment")
        .count()
}

async fn writes(operator: &Operator) -> f64 {
    operator
        .metric_sum("sovereign_api_writes_total", "")
        .await
        .unwrap_or(0.0)
}

/// Waits until exactly one of `operators` leads; returns its index.
async fn leader_of(operators: &[&Operator]) -> usize {
    eventually("one operator leads", || async {
        let mut leaders = Vec::new();
        for (i, operator) in operators.iter().enumerate() {
            if operator.gauge("sovereign_leader").await == Some(1.0) {
                leaders.push(i);
            }
        }
        match leaders.as_slice() {
            [one] => Ok(*one),
            other => Err(format!("leaders: {other:?}")),
        }
    })
    .await
}

/// Polls (every 100 ms, up to 60 s) until `operator` says it leads; returns how long it took.
async fn time_to_lead(operator: &Operator, since: Instant) -> Duration {
    loop {
        if operator.gauge("sovereign_leader").await == Some(1.0) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "the standby did not take over within 60 s; log: {}",
            operator.log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn holder(client: &Client) -> String {
    Api::<Lease>::namespaced(client.clone(), RELEASE_NAMESPACE)
        .get(LEASE)
        .await
        .ok()
        .and_then(|l| l.spec?.holder_identity)
        .unwrap_or_default()
}

/// The example is converged: both regions Ready and every Deployment the operator manages in
/// their namespaces exists again (the test deleted them).
async fn converged(client: &Client, expected_deployments: usize) -> Result<(), String> {
    for region in ["eu", "in"] {
        let region = Api::<SovereignRegion>::all(client.clone())
            .get(region)
            .await
            .map_err(|e| e.to_string())?;
        let ready = region
            .status
            .unwrap_or_default()
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status)
            .unwrap_or_default();
        if ready != "True" {
            return Err(format!(
                "region {} Ready={ready}",
                region.metadata.name.unwrap_or_default()
            ));
        }
    }
    let mut deployments = 0;
    for namespace in ["sovereign-eu", "sovereign-in"] {
        deployments += Api::<Deployment>::namespaced(client.clone(), namespace)
            .list(
                &ListParams::default().labels(&sovereign_operator::api::labels::managed_selector()),
            )
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
    }
    if deployments < expected_deployments {
        return Err(format!("{deployments}/{expected_deployments} Deployments"));
    }
    for (namespace, name) in EXAMPLE_BACKENDS {
        let backend = Api::<InferenceBackend>::namespaced(client.clone(), namespace)
            .get(name)
            .await
            .map_err(|e| e.to_string())?;
        let ready = backend
            .status
            .unwrap_or_default()
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| format!("{}/{}", c.status, c.reason))
            .unwrap_or_default();
        if !ready.starts_with("True/") {
            return Err(format!("backend {namespace}/{name} {ready}"));
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_standby_takes_over_when_the_leader_dies_or_stops() {
    // Its own plane: exactly one writer at a time can only be seen where nobody else writes.
    let plane = exclusive(PlaneId::Leader).await;
    plane.install_example_with_fixtures().await;
    let client = plane.client().await;
    ensure_namespace(&client, RELEASE_NAMESPACE).await;
    // A fresh plane: the leader has to create every Deployment of the example (and the
    // regions go through Progressing), so a kill after its first write is mid-convergence.
    let expected_deployments = example_deployments();
    assert!(expected_deployments > 0, "the example renders Deployments");

    // Two replicas, as the chart runs them.
    let first = start(&plane);
    let second = start(&plane);
    let leader_index = leader_of(&[&first, &second]).await;
    let (leader, standby) = if leader_index == 0 {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(standby.gauge("sovereign_leader").await, Some(0.0));

    // Kill the leader as soon as it has written something: mid-convergence.
    eventually("the leader writes", || async {
        let w = writes(&leader).await;
        if w > 0.0 {
            Ok(w)
        } else {
            Err("no writes yet".into())
        }
    })
    .await;
    let leader_writes = writes(&leader).await;
    let standby_writes = writes(&standby).await;
    assert_eq!(
        standby_writes,
        0.0,
        "the standby wrote while the other replica led: log {}",
        standby.log.display()
    );
    let before = holder(&client).await;
    leader.assert_no_forbidden();
    let killed_at = Instant::now();
    leader.kill();
    let took = time_to_lead(&standby, killed_at).await;
    eprintln!(
        "leader killed (SIGKILL) after {leader_writes} writes; the standby took over in {:.1} s",
        took.as_secs_f64()
    );
    let after = holder(&client).await;
    assert_ne!(before, after, "the Lease holder did not change");

    // The new leader finishes the convergence.
    eventually("the new leader converges the example", || async {
        converged(&client, expected_deployments).await
    })
    .await;
    assert!(
        writes(&standby).await > 0.0,
        "the new leader wrote nothing, so it did not finish the work"
    );

    // Graceful: a third replica stands by, the leader gets SIGTERM, releases the Lease, and the
    // standby takes over on its next poll instead of after the lease duration.
    let third = start(&plane);
    eventually("the third replica stands by", || async {
        match third.gauge("sovereign_leader").await {
            Some(0.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(writes(&third).await, 0.0, "a standby wrote");
    standby.assert_no_forbidden();
    let stopped_at = Instant::now();
    standby.stop();
    let took = time_to_lead(&third, stopped_at).await;
    eprintln!(
        "leader stopped (SIGTERM); the standby took over in {:.1} s (including the old leader's shutdown)",
        took.as_secs_f64()
    );
    third.assert_no_forbidden();
    third.stop();
}
