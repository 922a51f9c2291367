//! The Kubernetes manifests of `deploy/kubernetes/`: they parse, name what Kubernetes needs, run
//! commands this binary accepts, and take every secret from the example Secret (none in a
//! manifest or an argument).

use std::collections::BTreeSet;
use std::path::Path;

use clap::Parser;
use mongoferry::cli::Cli;
use serde::Deserialize;
use serde_yaml::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");

/// Every document of a YAML file.
fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(Path::new(DIR).join(file)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The secret keys a pod's container reads, as (secret, key).
fn secret_refs(container: &Value) -> Vec<(String, String, String)> {
    container["env"]
        .as_sequence()
        .map(|env| {
            env.iter()
                .filter_map(|var| {
                    let secret = &var["valueFrom"]["secretKeyRef"];
                    Some((
                        var["name"].as_str()?.to_string(),
                        secret["name"].as_str()?.to_string(),
                        secret["key"].as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The example Secret's keys, by secret name.
fn example_secret_keys() -> BTreeSet<(String, String)> {
    let docs = documents("secret.example.yaml");
    assert_eq!(docs.len(), 1);
    let secret = &docs[0];
    assert_eq!(kind(secret), "Secret");
    let name = secret["metadata"]["name"].as_str().unwrap().to_string();
    secret["stringData"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| (name.clone(), k.as_str().unwrap().to_string()))
        .collect()
}

/// The container's arguments parse as a command of this binary (given the values that come from
/// the environment in the pod).
fn parses(args: &[String], from_env: &[&str]) -> Cli {
    let mut argv = vec!["mongoferry".to_string()];
    argv.extend(args.iter().cloned());
    for flag in from_env {
        let value = match *flag {
            "--state" => "mongodb://state.invalid/mongoferry",
            _ => "mongodb://cluster.invalid/",
        };
        argv.extend([flag.to_string(), value.to_string()]);
    }
    Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

#[test]
fn every_manifest_parses_and_names_what_kubernetes_needs() {
    for file in ["copy-job.yaml", "serve.yaml", "secret.example.yaml"] {
        for doc in documents(file) {
            assert!(doc["apiVersion"].as_str().is_some(), "{file}: apiVersion");
            assert!(
                doc["metadata"]["name"].as_str().is_some(),
                "{file}: metadata.name"
            );
            // No credentials outside the Secret.
            if kind(&doc) != "Secret" {
                let text = serde_yaml::to_string(&doc).unwrap();
                assert!(
                    !text.contains('@'),
                    "{file}: a credential in a {}",
                    kind(&doc)
                );
            }
        }
    }
}

#[test]
fn the_copy_job_runs_copiers_that_share_partitions_on_a_shared_state() {
    let docs = documents("copy-job.yaml");
    let job = docs.iter().find(|d| kind(d) == "Job").expect("a Job");
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    let completions = spec["completions"].as_u64().unwrap();
    assert!(completions >= 2, "several copiers");
    assert_eq!(spec["parallelism"].as_u64(), Some(completions));
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "OnFailure");
    let container = &pod["containers"][0];
    let args = strings(&container["args"]);
    assert_eq!(args[0], "copy");
    // Partitions are what the copiers share; standbys cover a job with none.
    assert!(args.contains(&"--partition-docs".to_string()));
    assert!(args.contains(&"--standby".to_string()));

    // The URIs come from the Secret, by the variables the binary reads.
    let secrets = example_secret_keys();
    let refs = secret_refs(container);
    let variables: BTreeSet<&str> = refs.iter().map(|(v, _, _)| v.as_str()).collect();
    assert_eq!(
        variables,
        BTreeSet::from(["MONGOFERRY_FROM", "MONGOFERRY_TO", "MONGOFERRY_STATE"])
    );
    for (variable, secret, key) in &refs {
        assert!(
            secrets.contains(&(secret.clone(), key.clone())),
            "{variable}: {secret}/{key}"
        );
    }
    parses(&args, &["--from", "--to", "--state"]);
}

#[test]
fn the_service_runs_replicas_on_a_shared_state_asks_for_its_token_and_limits_its_clusters() {
    let docs = documents("serve.yaml");
    let kinds: BTreeSet<&str> = docs.iter().map(kind).collect();
    assert_eq!(kinds, BTreeSet::from(["Deployment", "Service"]));
    let deployment = docs.iter().find(|d| kind(d) == "Deployment").unwrap();
    assert!(
        deployment["spec"]["replicas"].as_u64() >= Some(2),
        "replicas sharing one MongoDB state"
    );
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args = strings(&container["args"]);
    assert_eq!(args[0], "serve");
    assert!(args
        .windows(2)
        .any(|w| w[0] == "--listen" && w[1].starts_with("0.0.0.0:")));
    assert!(
        args.contains(&"--allow-cluster".to_string()),
        "a cluster allow-list"
    );
    assert!(
        !args.contains(&"--insecure-no-auth".to_string()),
        "off loopback the service needs its token"
    );
    // The token and the state database come from the Secret, by the variables the binary reads.
    let refs = secret_refs(container);
    let variables: BTreeSet<&str> = refs.iter().map(|(v, _, _)| v.as_str()).collect();
    assert_eq!(
        variables,
        BTreeSet::from([
            mongoferry::cli::TOKEN_VARIABLE,
            "MONGOFERRY_STATE",
            mongoferry::cli::CREDENTIALS_KEY_VARIABLE,
        ])
    );
    for (variable, secret, key) in &refs {
        assert!(
            example_secret_keys().contains(&(secret.clone(), key.clone())),
            "{variable}: {secret}/{key}"
        );
    }
    assert!(
        !args.contains(&"--state".to_string()),
        "the state's URI is a secret: from the environment"
    );
    // The port the Service sends to is the container's.
    let service = docs.iter().find(|d| kind(d) == "Service").unwrap();
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"],
        container["ports"][0]["name"]
    );
    parses(&args, &[]);
}
