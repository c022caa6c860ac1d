//! The CRDs on a real API server: they install, the example is accepted, every invalid object of
//! the corpus is refused with a message naming the field, and kubectl shows the columns and
//! the field documentation.

use kube::api::{DeleteParams, DynamicObject, PostParams};
use kube::{Api, Client};
use serde_json::Value;

use crate::corpus::{Case, cases};
use crate::harness::{dynamic_api, ensure_namespace, shared};

const CORPUS_NAMESPACE: &str = "e2e-corpus";

#[tokio::test]
async fn crds_install_and_become_established() {
    let names = shared().await.install_crds().await;
    assert_eq!(
        names,
        [
            "inferencebackends.sovereign.ai",
            "residencypolicies.sovereign.ai",
            "sovereignregions.sovereign.ai",
            "tokenbudgets.sovereign.ai",
        ]
    );
}

#[tokio::test]
async fn every_example_document_is_accepted() {
    let applied = shared().await.install_example().await;
    assert_eq!(
        applied, 15,
        "2 namespaces, 2 regions, 7 backends, 2 policies, 2 budgets"
    );
    let client = shared().await.client().await;
    let regions: Api<DynamicObject> = dynamic_api(
        &client,
        &serde_json::json!({"apiVersion": "sovereign.ai/v1alpha1", "kind": "SovereignRegion"}),
    )
    .await;
    let eu = regions.get("eu").await.expect("region eu stored");
    assert_eq!(eu.data["spec"]["jurisdiction"], "EU");
    // Schema defaults were applied by the API server.
    // The default is the LiteLLM release the suite runs (versions.env).
    assert_eq!(
        eu.data["spec"]["gateway"]["image"],
        sovereign_operator::api::versions::gateway_image()
    );
}

/// What the API server says to `case`: Ok on acceptance, the error text on refusal.
async fn submit(client: &Client, index: usize, case: &Case) -> Result<(), String> {
    let name = format!("case-{index}");
    let prepare = |object: &Value| {
        let mut object = object.clone();
        object["metadata"]["name"] = Value::from(name.clone());
        if object["metadata"].get("namespace").is_some() {
            object["metadata"]["namespace"] = Value::from(CORPUS_NAMESPACE);
        }
        object
    };
    let object = prepare(&case.object);
    let api = dynamic_api(client, &object).await;
    let parse = |v: Value| serde_json::from_value::<DynamicObject>(v).expect("object");
    let result = match &case.old {
        None => {
            // Dry run: the API server validates fully but stores nothing.
            let params = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            api.create(&params, &parse(object)).await.map(|_| ())
        }
        Some(old) => {
            let stored = api
                .create(&PostParams::default(), &parse(prepare(old)))
                .await
                .unwrap_or_else(|e| panic!("{}: the original object was refused: {e}", case.name));
            // The operator may write the stored object's status meanwhile (a new
            // resourceVersion): retry the replace on a conflict with the fresh version.
            let mut resource_version = stored.metadata.resource_version;
            let mut attempts = 0;
            let result = loop {
                let mut update = parse(object.clone());
                update.metadata.resource_version = resource_version.clone();
                match api.replace(&name, &PostParams::default(), &update).await {
                    Err(kube::Error::Api(status)) if status.code == 409 && attempts < 10 => {
                        attempts += 1;
                        resource_version = api
                            .get(&name)
                            .await
                            .unwrap_or_else(|e| panic!("{}: re-read failed: {e}", case.name))
                            .metadata
                            .resource_version;
                    }
                    other => break other.map(|_| ()),
                }
            };
            api.delete(&name, &DeleteParams::default())
                .await
                .unwrap_or_else(|e| panic!("{}: clean-up failed: {e}", case.name));
            result
        }
    };
    result.map_err(|e| match e {
        kube::Error::Api(status) => status.message,
        other => panic!("{}: not an API refusal: {other}", case.name),
    })
}

#[tokio::test]
async fn the_api_server_accepts_and_refuses_exactly_as_the_corpus_says() {
    shared().await.install_crds().await;
    let client = shared().await.client().await;
    ensure_namespace(&client, CORPUS_NAMESPACE).await;
    let mut failures = Vec::new();
    let cases = cases();
    for (index, case) in cases.iter().enumerate() {
        let outcome = submit(&client, index, case).await;
        match (case.expect, outcome) {
            (None, Err(message)) => {
                failures.push(format!(
                    "{}: expected acceptance, refused: {message}",
                    case.name
                ));
            }
            (Some(expected), Ok(())) => {
                failures.push(format!(
                    "{}: expected refusal ({expected}), accepted",
                    case.name
                ));
            }
            (Some(expected), Err(message)) => {
                // The API server writes `<field>: Invalid value: "<type>": <message>`; the corpus
                // writes `<field>: <message>`. Both parts must be there.
                let (field, text) = match expected.split_once(": ") {
                    Some((field, text)) if field.starts_with("spec") => (Some(field), text),
                    _ => (None, expected),
                };
                let names_field = field.is_none_or(|f| message.contains(&format!("{f}: ")));
                if !names_field || !message.contains(text) {
                    failures.push(format!(
                        "{}: expected {expected:?} in the refusal, got {message:?}",
                        case.name
                    ));
                }
            }
            (None, Ok(())) => {}
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(cases.iter().filter(|c| c.expect.is_some()).count() >= 40);
}

#[tokio::test]
async fn kubectl_shows_the_printer_columns_and_explains_nested_fields() {
    shared().await.install_example().await;
    let table = shared().await.kubectl(&["get", "sovereign", "-A"]);
    for column in [
        "JURISDICTION",
        "LOCATIONS",
        "BACKENDS",
        "COMPLIANT",
        "MODEL",
        "KIND",
        "MODE",
        "PERIOD",
        "LIMIT",
        "USED%",
        "FORECAST",
    ] {
        assert!(table.contains(column), "no {column} column in:\n{table}");
    }
    assert!(
        table.contains("[\"europe-west9\",\"eu-central-1\",\"fr-par\"]"),
        "{table}"
    );
    assert!(table.contains("ovh-llama-3.3-70b"), "{table}");

    let short = shared().await.kubectl(&["get", "sreg"]);
    assert!(short.contains("eu") && short.contains("IN"), "{short}");

    let explained = shared()
        .await
        .kubectl(&["explain", "inferencebackends.spec.vllm.gpus.count"]);
    assert!(
        explained.contains("GPUs per replica; at least 1."),
        "{explained}"
    );
    let explained = shared()
        .await
        .kubectl(&["explain", "tokenbudgets.spec.thresholds.action"]);
    assert!(
        explained.contains("Notify, Throttle, Block or Downgrade."),
        "{explained}"
    );
}

/// The offline validation every offline command reads its input through
/// (`sovereign_operator::api::schema`) gives, for every create case of the corpus, exactly the
/// `Status.message` of the API server: same verdict, same words, same fields.
#[tokio::test]
async fn offline_validation_says_what_the_api_server_says() {
    shared().await.install_crds().await;
    let client = shared().await.client().await;
    ensure_namespace(&client, CORPUS_NAMESPACE).await;
    let mut failures = Vec::new();
    let mut compared = 0;
    for (index, case) in cases().iter().enumerate() {
        if case.old.is_some() {
            continue; // Offline there is only ever a create.
        }
        // What `submit` sends: the case renamed, in the corpus namespace.
        let mut object = case.object.clone();
        object["metadata"]["name"] = Value::from(format!("case-{index}"));
        if object["metadata"].get("namespace").is_some() {
            object["metadata"]["namespace"] = Value::from(CORPUS_NAMESPACE);
        }
        let offline = sovereign_operator::api::schema::validate(&object).map_err(|e| e.to_string());
        let online = submit(&client, index, case).await;
        compared += 1;
        if offline != online {
            failures.push(format!(
                "{}:\n  offline: {offline:?}\n  API server: {online:?}",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(compared >= 50, "{compared} cases compared");
}
