//! The Kubernetes manifests of `deploy/kubernetes/`: they parse, name what Kubernetes needs, run
//! commands this binary accepts, and take every secret from the example Secret (none in a
//! manifest or an argument). The Grafana dashboard (`deploy/grafana/`) and the Prometheus alerts
//! (`deploy/prometheus/`): they parse, and read only metrics a service serves.

mod common;

use std::collections::{BTreeMap, BTreeSet};
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

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");

/// The metric families a service declares at `GET /metrics`, with their types: every family
/// has its `# HELP` and `# TYPE` lines, also before any job ran (a service without jobs here).
fn served_families() -> BTreeMap<String, String> {
    let service = common::service::Serve::default().start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, metrics) = runtime.block_on(service.get("/metrics"));
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap().to_string();
    let types: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_string(), kind.to_string())
        })
        .collect();
    for name in types.keys() {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
    }
    assert!(types.len() > 20, "{text}");
    types
}

/// The `mongoferry_…` metric names a PromQL expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("mongoferry_") {
        let preceded = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// Every name `exprs` read is a family `families` declares (a histogram's by its `_bucket`,
/// `_sum` or `_count` series).
fn assert_served(file: &str, exprs: &[String], families: &BTreeMap<String, String>) {
    let mut read = 0;
    for expr in exprs {
        for name in metric_names(expr) {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    let base = name.strip_suffix(suffix)?;
                    (families.get(base)? == "histogram").then_some(base)
                })
                .unwrap_or(&name);
            assert!(
                families.contains_key(family),
                "{file}: {name} is not a metric the service serves (in `{expr}`)"
            );
            read += 1;
        }
    }
    assert!(read > 0, "{file}: no mongoferry metric read");
}

/// The job states an expression names (`state="…"`) are states a job can be in.
fn assert_states(file: &str, exprs: &[String]) {
    for expr in exprs {
        for part in expr.split("state=\"").skip(1) {
            let state = part.split('"').next().unwrap();
            let known = serde_json::from_value::<mongoferry::service::job::JobState>(
                serde_json::Value::String(state.to_string()),
            );
            assert!(
                known.is_ok(),
                "{file}: no job state {state:?} (in `{expr}`)"
            );
        }
    }
}

/// Every string under the key `key`, anywhere in `value`.
fn strings_under(value: &serde_json::Value, key: &str, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match v.as_str() {
                    Some(s) if k == key => found.push(s.to_string()),
                    _ => strings_under(v, key, found),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| strings_under(v, key, found)),
        _ => {}
    }
}

fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(Path::new(DEPLOY).join("grafana/mongoferry.json")).unwrap();
    serde_json::from_str(&text).expect("deploy/grafana/mongoferry.json is JSON")
}

fn alerts() -> Value {
    let text = std::fs::read_to_string(Path::new(DEPLOY).join("prometheus/alerts.yml")).unwrap();
    serde_yaml::from_str(&text).expect("deploy/prometheus/alerts.yml is YAML")
}

/// The alerting rules, each as a mapping.
fn alert_rules(alerts: &Value) -> Vec<&Value> {
    let groups = alerts["groups"].as_sequence().expect("groups");
    assert!(!groups.is_empty());
    groups
        .iter()
        .flat_map(|g| {
            assert!(g["name"].as_str().is_some(), "a group's name");
            g["rules"].as_sequence().expect("a group's rules")
        })
        .collect()
}

#[test]
fn the_dashboard_and_the_alerts_read_only_metrics_the_service_serves() {
    let families = served_families();

    // The dashboard: its panels' queries and its variables' queries.
    let dashboard = dashboard();
    let mut exprs = Vec::new();
    strings_under(&dashboard["panels"], "expr", &mut exprs);
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    for variable in variables {
        strings_under(&variable["query"], "query", &mut exprs);
        if let Some(query) = variable["query"].as_str() {
            exprs.push(query.to_string());
        }
    }
    assert_served("mongoferry.json", &exprs, &families);
    assert_states("mongoferry.json", &exprs);

    // The alerts.
    let alerts = alerts();
    let exprs: Vec<String> = alert_rules(&alerts)
        .iter()
        .map(|r| r["expr"].as_str().expect("an alert's expr").to_string())
        .collect();
    assert_served("alerts.yml", &exprs, &families);
    assert_states("alerts.yml", &exprs);
}

#[test]
fn the_dashboard_takes_its_datasource_and_jobs_from_variables() {
    let dashboard = dashboard();
    assert!(dashboard["schemaVersion"].as_u64() >= Some(36));
    assert!(dashboard["uid"].as_str().is_some());
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("a `{name}` variable"))
    };
    let datasource = variable("datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let job = variable("job");
    assert!(job["definition"]
        .as_str()
        .unwrap()
        .starts_with("label_values(mongoferry_"));
    // Every panel and query reads the datasource of the variable.
    let panels = dashboard["panels"].as_array().unwrap();
    let mut queried = 0;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap();
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            queried += 1;
        }
    }
    assert!(queried >= 10);
}

#[test]
fn every_alert_has_a_duration_a_severity_and_a_summary() {
    let alerts = alerts();
    let rules = alert_rules(&alerts);
    assert!(rules.len() >= 5);
    let mut names = BTreeSet::new();
    for rule in rules {
        let name = rule["alert"].as_str().expect("alerting rules only");
        assert!(names.insert(name), "{name} twice");
        assert!(rule["for"].as_str().is_some(), "{name}: for");
        assert!(
            matches!(
                rule["labels"]["severity"].as_str(),
                Some("critical" | "warning" | "info")
            ),
            "{name}: labels.severity"
        );
        for annotation in ["summary", "description"] {
            assert!(
                rule["annotations"][annotation]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{name}: annotations.{annotation}"
            );
        }
    }
}

/// `promtool check rules`, with the promtool scripts/setup-test-env.sh unpacks into .tools/bin/
/// (from Debian's `prometheus` package), else one on the PATH. Under CI it must be there;
/// elsewhere, without one, the check is skipped with a message.
#[test]
fn promtool_accepts_the_alerts() {
    let file = Path::new(DEPLOY).join("prometheus/alerts.yml");
    let unpacked = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/promtool");
    let promtool = match unpacked.exists() {
        true => unpacked.into_os_string(),
        false => "promtool".into(),
    };
    let checked = match std::process::Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs `promtool check rules`: run scripts/setup-test-env.sh to fetch promtool"
            );
            eprintln!("promtool is not on the PATH: `promtool check rules` skipped");
            return;
        }
        Err(e) => panic!("promtool: {e}"),
    };
    assert!(
        checked.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}
