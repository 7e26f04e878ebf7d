//! The deploy files (Dockerfile, deploy/wasmgate.service, deploy/kubernetes/) checked offline:
//! their configurations pass `wasmgate check`, the Kubernetes manifests parse and agree with
//! each other and with the configuration, and `systemd-analyze verify` accepts the unit.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;
use wasmgate_integration::proxy::{binary, run_command};
use wasmgate_integration::redis::{missing, which};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs `wasmgate check` on `config`, with its absolute cache directory moved into a
/// temporary one (check creates it).
fn check(config: &str) {
    let dir = tempfile::tempdir().unwrap();
    let text = config.replace(
        "/var/cache/wasmgate",
        &dir.path().join("cache").display().to_string(),
    );
    let path = dir.path().join("wasmgate.yaml");
    std::fs::write(&path, text).unwrap();
    let out = run_command(&["check", "-c", &path.display().to_string()]);
    assert!(
        out.status.success(),
        "{config}\n{}{}",
        out.stdout,
        out.stderr
    );
}

/// The port of a `host:port` value of a configuration.
fn port(config: &Value, key: &str) -> u16 {
    let addr = config[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` in the config"));
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

fn get<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(value, |v, k| &v[*k])
}

#[test]
fn example_config_passes_check_and_matches_the_dockerfile() {
    let config = read("deploy/wasmgate.yaml");
    check(&config);
    let parsed: Value = serde_yaml::from_str(&config).unwrap();
    let docker = read("Dockerfile");
    let froms = docker.lines().filter(|l| l.starts_with("FROM ")).count();
    assert_eq!(froms, 2, "a build stage and a runtime stage");
    let runtime = docker.rsplit_once("\nFROM ").unwrap().1;
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    assert!(user != "root" && user != "0", "runs as {user}");
    let health = runtime
        .split("\nHEALTHCHECK ")
        .nth(1)
        .expect("a HEALTHCHECK");
    let admin = format!("127.0.0.1:{}/ready", port(&parsed, "admin"));
    assert!(
        health.lines().take(2).any(|l| l.contains(&admin)),
        "{health}"
    );
    assert!(runtime.contains("\"/etc/wasmgate/wasmgate.yaml\""));
}

#[test]
fn kubernetes_manifests_parse_and_agree() {
    let mut docs = Vec::new();
    let dir = root().join("deploy/kubernetes");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value =
                Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            docs.push(value);
        }
    }
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("a {k}"))
    };
    let (map, deployment, service) = (kind("ConfigMap"), kind("Deployment"), kind("Service"));

    let config_text = map["data"]["wasmgate.yaml"]
        .as_str()
        .expect("data.wasmgate.yaml");
    // Endpoints are resolved when the configuration loads; a cluster's DNS names resolve only
    // in the cluster.
    check(&config_text.replace("backend.default.svc.cluster.local", "localhost"));
    let config: Value = serde_yaml::from_str(config_text).unwrap();

    let pod = get(deployment, &["spec", "template"]);
    let labels = &pod["metadata"]["labels"];
    assert_eq!(
        &get(deployment, &["spec", "selector", "matchLabels"]),
        &labels
    );
    assert_eq!(&service["spec"]["selector"], labels);
    let container = &pod["spec"]["containers"][0];
    let port_named = |name: &str| {
        container["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("container port {name}"))
    };
    assert_eq!(port_named("http"), u64::from(port(&config, "listen")));
    assert_eq!(port_named("admin"), u64::from(port(&config, "admin")));
    let probe = get(container, &["readinessProbe", "httpGet"]);
    assert_eq!(
        (&probe["path"], &probe["port"]),
        (&Value::from("/ready"), &Value::from("admin"))
    );
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");

    // The config volume is the ConfigMap, mounted where the container reads its config.
    let volumes = pod["spec"]["volumes"].as_sequence().unwrap();
    let mounts = container["volumeMounts"].as_sequence().unwrap();
    let mount_of = |path: &str| {
        let name = &mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("a mount at {path}"))["name"];
        volumes
            .iter()
            .find(|v| &v["name"] == name)
            .unwrap_or_else(|| panic!("volume {name:?}"))
    };
    assert_eq!(
        mount_of("/etc/wasmgate")["configMap"]["name"],
        map["metadata"]["name"]
    );
    mount_of("/var/lib/wasmgate/modules");
    mount_of("/var/cache/wasmgate");
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args, ["run", "-c", "/etc/wasmgate/wasmgate.yaml"]);
}

#[test]
fn systemd_unit_verifies() {
    let unit = read("deploy/wasmgate.service");
    for line in [
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "ExecStart=/usr/local/bin/wasmgate run -c /etc/wasmgate/wasmgate.yaml",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line}");
    }
    if which("systemd-analyze").is_none() {
        return missing("systemd-analyze", "systemd");
    }
    // verify checks that the binary exists: point it at the one under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wasmgate.service");
    let unit = unit.replace("/usr/local/bin/wasmgate", &binary().display().to_string());
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Unknown keys and bad values are only warnings (exit 0): none may be printed.
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );
}
