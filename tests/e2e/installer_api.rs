//! Agent installers end to end: a one-liner mints an attempt, its
//! installer downloads once for the account that took it, carrying the
//! broker, the credentials and the signing keyring; the setup script
//! really places the agent (under a staging root); the one-liner itself
//! runs against the backend and its progress lands on the attempt.

use std::collections::BTreeMap;
use std::io::Read;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{eventually, Backend, Nats, TOKEN};

fn untar(bytes: &[u8]) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mode = e.header().mode().unwrap();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.insert(name, (mode, data));
    }
    out
}

fn line_value<'a>(script: &'a str, var: &str) -> &'a str {
    script
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{var}=")))
        .unwrap_or_else(|| panic!("no {var} in {script}"))
        .trim_matches('\'')
}

async fn get_bytes(
    b: &Backend,
    path: &str,
    token: &str,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let r = reqwest::Client::new()
        .get(format!("{}{path}", b.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_liner_installs_from_a_one_time_attempt_and_reports_its_progress() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let key = kanade_shared::signing::generate_keypair().unwrap();
    let secret = kanade_shared::signing::encode_secret(&key);
    let b = Backend::start_configured(
        &nats.url,
        &dir.path().join("data"),
        "",
        "",
        &[
            ("KANADE_COMMAND_SIGNING_KEY", &secret),
            ("KANADE_COMMAND_SIGNING_KID", "k1"),
        ],
    );
    for exe in [
        crate::common::agent_binary::linux("2.0.0"),
        crate::common::agent_binary::windows("2.0.0"),
    ] {
        let (status, body) = eventually("agent_releases ready", || async {
            let r = crate::fleet_admin::upload(&b, "/api/agents/publish", "file", &exe).await;
            (r.0 != 503).then_some(r)
        })
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _, body) = b
        .call(
            Method::PUT,
            "/api/server-settings",
            Some(TOKEN),
            Some(
                json!({"agent_install": {"nats_token": "tok'en", "require_signed_commands": true}}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // A viewer takes a one-liner: an attempt only that viewer can use.
    let viewer = crate::common::viewer_token(&b).await;
    let (status, headers, script) = get_bytes(&b, "/api/agents/installer.sh", &viewer).await;
    assert_eq!(status, 200);
    assert_eq!(headers["cache-control"], "no-store");
    let script = String::from_utf8(script).unwrap();
    let attempt = line_value(&script, "ATTEMPT").to_string();
    assert_eq!(line_value(&script, "KEY").len(), 64);
    let path = format!("/api/agents/installer?os=linux&attempt={attempt}");
    assert_eq!(get_bytes(&b, &path, TOKEN).await.0, 403, "not the taker's");
    let (status, headers, tgz) = get_bytes(&b, &path, &viewer).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/gzip");
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"kanade-agent-installer-2.0.0-linux-x86_64.tar.gz\""
    );
    assert_eq!(get_bytes(&b, &path, &viewer).await.0, 403, "one download");

    let files = untar(&tgz);
    assert_eq!(
        files.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "README.txt",
            "bin/kanade-agent",
            "etc/agent.toml",
            "install.sh",
            "setup-agent.sh",
            "systemd/kanade-agent.service"
        ]
    );
    assert_eq!(files["bin/kanade-agent"].0, 0o755);
    assert_eq!(
        files["bin/kanade-agent"].1,
        crate::common::agent_binary::linux("2.0.0")
    );
    let config: toml::Table =
        toml::from_str(std::str::from_utf8(&files["etc/agent.toml"].1).unwrap()).unwrap();
    assert_eq!(
        config["agent"]["nats_url"].as_str(),
        Some(nats.url.as_str())
    );
    let install = String::from_utf8(files["install.sh"].1.clone()).unwrap();
    assert!(
        install.contains(r"export KANADE_NATS_TOKEN='tok'\''en'"),
        "{install}"
    );
    assert!(
        install.contains("export KANADE_REQUIRE_SIGNED_COMMANDS=1"),
        "{install}"
    );
    let keys = line_value(&install, "export KANADE_COMMAND_KEYS");
    let ring: Value = serde_json::from_str(keys).unwrap();
    assert_eq!(ring[0]["kid"], "k1");
    assert_eq!(
        ring[0]["public_key"].as_str().unwrap(),
        kanade_shared::signing::encode_public(&key.verifying_key())
    );

    // The setup, for real, under a staging root: the agent stands in with
    // a script whose connection check says the broker refused it.
    let unpacked = tempfile::tempdir().unwrap();
    for (name, (mode, data)) in &files {
        let p = unpacked.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    std::fs::write(
        unpacked.path().join("bin/kanade-agent"),
        "#!/bin/sh\n[ \"$1\" = --check-connection ] && [ \"$KANADE_NATS_TOKEN\" = \"tok'en\" ] && exit 4\nexit 9\n",
    )
    .unwrap();
    let root = unpacked.path().join("root");
    let out = std::process::Command::new("sh")
        .arg(unpacked.path().join("install.sh"))
        .env("KANADE_INSTALL_ROOT", &root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stages = std::fs::read_to_string(unpacked.path().join("install-stage")).unwrap();
    assert_eq!(stages, "placement\nservice_start\nconnection_check\n");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    assert_eq!(
        read("etc/kanade/agent.env"),
        "KANADE_NATS_TOKEN=\"tok'en\"\n"
    );
    assert_eq!(read("etc/kanade/command-keys.json").trim(), keys);
    assert_eq!(read("etc/kanade/require-signed-commands").trim(), "1");
    assert!(read("etc/systemd/system/kanade-agent.service")
        .contains("EnvironmentFile=-/etc/kanade/agent.env"));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.join("etc/kanade/agent.env"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The one-liner itself, against the backend (staging root again): it
    // downloads, unpacks, installs, and reports each step.
    let (_, _, script) = get_bytes(&b, "/api/agents/installer.sh", &viewer).await;
    let script = String::from_utf8(script).unwrap();
    let second = line_value(&script, "ATTEMPT").to_string();
    let work = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env("KANADE_INSTALL_ROOT", work.path())
        .env("TMPDIR", work.path())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the stand-in agent cannot connect: {out:?}"
    );
    let (status, _, list) = b
        .call(
            Method::GET,
            "/api/agents/install-attempts",
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{list}");
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == second)
        .unwrap()
        .clone();
    assert_eq!(
        (
            &row["status"],
            &row["last_stage"],
            &row["os"],
            &row["issuer"]
        ),
        (
            &json!("failed"),
            &json!("connection_check"),
            &json!("linux"),
            &json!("vera")
        ),
        "{row} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, _, events) = b
        .call(
            Method::GET,
            &format!("/api/agents/install-attempts/{second}"),
            Some(TOKEN),
            None,
        )
        .await;
    let stages: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "platform",
            "temporary_directory",
            "download",
            "extract",
            "install",
            "connection_check"
        ],
        "{events}"
    );
    assert!(work.path().join("etc/kanade/agent.toml").exists());

    // Windows: a zip, the credentials passed to our deploy script.
    let (status, headers, zipped) = get_bytes(&b, "/api/agents/installer", TOKEN).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/zip");
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(zipped)).unwrap();
    let names: Vec<String> = zip.file_names().map(str::to_string).collect();
    assert_eq!(
        names,
        [
            "kanade-agent.exe",
            "agent.toml",
            "deploy-agent.ps1",
            "install-agent.ps1",
            "install.cmd",
            "README.txt"
        ]
    );
    let mut ps1 = String::new();
    zip.by_name("install-agent.ps1")
        .unwrap()
        .read_to_string(&mut ps1)
        .unwrap();
    assert!(
        ps1.contains("-NatsToken 'tok''en'") && ps1.contains("-RequireSignedCommands"),
        "{ps1}"
    );
    let (status, _, body) = b
        .call(
            Method::GET,
            "/api/agents/installer?os=macos",
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 404, "no macOS release published: {body}");
    assert!(
        body["error"].as_str().unwrap().contains("macos-aarch64"),
        "{body}"
    );
    let (status, _, body) = b
        .call(
            Method::GET,
            "/api/agents/installer?os=macos&arch=x86_64",
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // Reports: the key authenticates, nothing else does; bad events are named.
    let report = |id: String, key: Option<&'static str>, body: String| {
        let mut r = reqwest::Client::new()
            .post(format!("{}/api/install-reports/{id}", b.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = key {
            r = r.header("x-install-key", k);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let ev = |seq: u32| {
        json!({"seq": seq, "stage": "download", "outcome": "progress", "exit_code": 0}).to_string()
    };
    let fake_key = "0000000000000000000000000000000000000000000000000000000000000000";
    assert_eq!(report(attempt.clone(), None, ev(1)).await.0, 401);
    assert_eq!(report(attempt.clone(), Some(fake_key), ev(1)).await.0, 401);
    assert_eq!(
        report("not-a-uuid".into(), Some(fake_key), ev(1)).await.0,
        401,
        "only attempt ids skip the session"
    );
    let (status, text) = report(
        attempt.clone(),
        Some(fake_key),
        json!({"seq": 1, "stage": "warp", "outcome": "progress", "exit_code": 0}).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("stage"), "{text}");
    assert_eq!(
        report(attempt.clone(), Some(fake_key), "x".repeat(2000))
            .await
            .0,
        413
    );
    let (status, _, _) = b
        .call(
            Method::GET,
            "/api/agents/install-attempts",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(status, 403);
}
