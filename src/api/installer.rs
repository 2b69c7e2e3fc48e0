//! Agent installers, as kanade 0.101 hands them out:
//!
//! - `GET /api/agents/installer?os=&arch=&attempt=`: the newest published
//!   agent release of the platform (`agent_releases`) with an `agent.toml`
//!   pointing at the broker agents should use (`server_settings`
//!   `agent_install.nats_url`, else our own `[nats] url`), the broker
//!   credentials and the command-signing keyring as set there, and the
//!   setup scripts: a zip for Windows, a tar.gz for Linux and macOS;
//! - `GET /api/agents/installer.ps1` / `.sh`: a one-line install for an
//!   operator to paste on a PC. Each mints an install attempt: a one-time,
//!   hour-long right for that account to download one installer, and a
//!   key the script reports its progress with
//!   (`POST /api/install-reports/{id}`, no session; see
//!   `install_attempts`).
//!
//! The setup scripts are ours (`installer/`); they place the agent where
//! a 0.101 agent looks (`/etc/kanade`, `%ProgramData%\Kanade`), keep the
//! credentials root/administrator-only, and end with the agent's own
//! `--check-connection`.

use std::io::Write;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use chrono::{Duration, Utc};
use kanade_shared::wire::ServerSettings;
use serde::Deserialize;
use sha2::Digest;

use super::error::ApiError;
use super::jobs::audit;
use super::objects::{live_objects, modified, open, AGENT_RELEASES};
use crate::api::state::AppState;
use crate::audit::Caller;

const SETUP_LINUX: &str = include_str!("installer/setup-agent.sh");
const SETUP_MACOS: &str = include_str!("installer/setup-agent-macos.sh");
const SYSTEMD_UNIT: &str = include_str!("installer/kanade-agent.service");
const LAUNCHD_PLIST: &str = include_str!("installer/com.kanade.agent.plist");
const DEPLOY_PS1: &str = include_str!("installer/deploy-agent.ps1");

/// How long an attempt's download and reports stay open.
const ATTEMPT_TTL: Duration = Duration::hours(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Os {
    Windows,
    Linux,
    Macos,
}

impl Os {
    fn as_str(self) -> &'static str {
        match self {
            Os::Windows => "windows",
            Os::Linux => "linux",
            Os::Macos => "macos",
        }
    }
}

#[derive(Deserialize)]
pub struct Params {
    os: Option<String>,
    arch: Option<String>,
    attempt: Option<String>,
}

/// The platform asked for, checked.
fn platform(p: &Params) -> Result<(Os, &'static str), ApiError> {
    let os = match p.os.as_deref().map(str::trim).unwrap_or("windows") {
        "windows" => Os::Windows,
        "linux" => Os::Linux,
        "macos" => Os::Macos,
        other => {
            return Err(ApiError::bad_param(
                "os",
                format!("{other:?} is not one of windows, linux, macos"),
            ))
        }
    };
    let default = if os == Os::Macos { "aarch64" } else { "x86_64" };
    let arch = match p.arch.as_deref().map(str::trim).unwrap_or(default) {
        "x86_64" => "x86_64",
        "aarch64" => "aarch64",
        other => {
            return Err(ApiError::bad_param(
                "arch",
                format!("{other:?} is not one of x86_64, aarch64"),
            ))
        }
    };
    if os == Os::Macos && arch == "x86_64" {
        return Err(ApiError::bad_param(
            "arch",
            "Intel (x86_64) Macs are not supported; use arch=aarch64",
        ));
    }
    Ok((os, arch))
}

/// Whether release `key` is for the platform (Windows keys are the bare
/// version; the others carry `-linux-<arch>` / `-macos-<arch>`).
fn release_matches(key: &str, os: Os, arch: &str) -> bool {
    const SUFFIXES: [&str; 3] = ["-linux-x86_64", "-linux-aarch64", "-macos-aarch64"];
    match os {
        Os::Windows => !SUFFIXES.iter().any(|s| key.ends_with(s)),
        Os::Linux => key.ends_with(&format!("-linux-{arch}")),
        Os::Macos => key.ends_with(&format!("-macos-{arch}")),
    }
}

/// What the installer embeds, from the server settings.
struct Embedded {
    nats_url: String,
    token: Option<String>,
    user_pair: Option<(String, String)>,
    command_keys: Option<String>,
    require_signed: bool,
}

fn literal_safe(s: &str) -> bool {
    !s.trim().is_empty() && !s.contains(['\'', '\n', '\r'])
}

async fn embedded(state: &AppState) -> Result<Embedded, ApiError> {
    let settings: ServerSettings = super::server_settings::current(&state.control)
        .await
        .map_err(|e| ApiError::Unavailable(format!("server settings unreadable: {e}")))?;
    let ai = settings.agent_install.unwrap_or_default();
    let nats_url = ai
        .nats_url
        .clone()
        .unwrap_or_else(|| state.nats_url.clone());
    if !literal_safe(&nats_url) {
        return Err(ApiError::Conflict(
            "agent_install.nats_url must be non-empty with no single quote or newline; fix it in the server settings".into(),
        ));
    }
    let set = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    let user_pair = match (set(&ai.nats_user), set(&ai.nats_password)) {
        (Some(u), Some(p)) => Some((u, p)),
        (None, None) => None,
        _ => {
            tracing::warn!(
                "agent_install has only half of nats_user / nats_password: neither is embedded"
            );
            None
        }
    };
    Ok(Embedded {
        nats_url,
        token: set(&ai.nats_token),
        user_pair,
        command_keys: state.control.signer.keyring_json(),
        require_signed: ai.require_signed_commands.unwrap_or(false),
    })
}

/// `agent.toml` for `os`: the host name as the agent id, the broker, logs.
fn agent_toml(os: Os, nats_url: &str) -> String {
    let log = match os {
        Os::Windows => r"C:\ProgramData\Kanade\logs\agent.log",
        _ => "/var/log/kanade/agent.log",
    };
    format!(
        "# kanade-agent configuration, written by the installer.\n\
         [agent]\nid = '{{{{ system.host }}}}'\nnats_url = '{nats_url}'\n\n\
         [log]\npath = '{log}'\nlevel = 'info'\n"
    )
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn ps_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `install.sh`: the embedded settings exported, then the setup script.
fn install_sh(os: Os, e: &Embedded) -> String {
    let mut out = String::from(
        "#!/bin/sh\n# Generated by kanade-backend: installs kanade-agent. Run as root (sudo).\nset -eu\ncd \"$(dirname \"$0\")\"\n",
    );
    if let Some(t) = &e.token {
        out += &format!("export KANADE_NATS_TOKEN={}\n", sh_quote(t));
    }
    if let Some((u, p)) = &e.user_pair {
        out += &format!(
            "export KANADE_NATS_USER={}\nexport KANADE_NATS_PASSWORD={}\n",
            sh_quote(u),
            sh_quote(p)
        );
    }
    if let Some(k) = &e.command_keys {
        out += &format!("export KANADE_COMMAND_KEYS={}\n", sh_quote(k));
        if e.require_signed {
            out += "export KANADE_REQUIRE_SIGNED_COMMANDS=1\n";
        }
    }
    let setup = if os == Os::Macos {
        "setup-agent-macos.sh"
    } else {
        "setup-agent.sh"
    };
    out += &format!("exec sh ./{setup}\n");
    out
}

/// `install-agent.ps1`: the embedded settings passed to `deploy-agent.ps1`.
fn install_ps1(version: &str, e: &Embedded) -> String {
    let mut args = String::new();
    if let Some(t) = &e.token {
        args += &format!(" -NatsToken {}", ps_quote(t));
    }
    if let Some((u, p)) = &e.user_pair {
        args += &format!(" -NatsUser {} -NatsPassword {}", ps_quote(u), ps_quote(p));
    }
    if let Some(k) = &e.command_keys {
        args += &format!(" -CommandKeys {}", ps_quote(k));
        if e.require_signed {
            args += " -RequireSignedCommands";
        }
    }
    format!(
        "# Generated by kanade-backend: installs kanade-agent {version}. Run elevated.\r\n\
         $ErrorActionPreference = 'Stop'\r\n\
         & (Join-Path $PSScriptRoot 'deploy-agent.ps1'){args}\r\n\
         exit $LASTEXITCODE\r\n"
    )
}

fn readme(version: &str, os: Os, e: &Embedded) -> String {
    let how = match os {
        Os::Windows => "Run install.cmd as an administrator.",
        _ => "Run: sudo sh install.sh",
    };
    let mut text = format!(
        "kanade-agent {version} installer ({}).\n\n{how}\n\nThe agent connects to {}.\n",
        os.as_str(),
        e.nats_url
    );
    if e.token.is_some() || e.user_pair.is_some() {
        text += "\nThis archive holds the broker credentials agents use: keep it as a secret.\n";
    }
    match (&e.command_keys, e.require_signed) {
        (Some(_), true) => text += "\nThe host will accept only commands signed by this backend.\n",
        (Some(_), false) => text += "\nThe host learns this backend's command-signing key.\n",
        (None, true) => text += "\nWARNING: signed commands were asked for, but this backend has no signing key: the host does not enforce them.\n",
        (None, false) => {}
    }
    if os == Os::Windows {
        text = text.replace('\n', "\r\n");
    }
    text
}

fn zip_archive(files: &[(&str, &[u8])]) -> Result<Vec<u8>, String> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in files {
        w.start_file(*name, options).map_err(|e| e.to_string())?;
        w.write_all(bytes).map_err(|e| e.to_string())?;
    }
    Ok(w.finish().map_err(|e| e.to_string())?.into_inner())
}

fn tar_gz(files: &[(&str, &[u8], u32)]) -> Result<Vec<u8>, String> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, bytes, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, name, *bytes)
            .map_err(|e| e.to_string())?;
    }
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .map_err(|e| e.to_string())
}

/// `GET /api/agents/installer`.
pub async fn installer(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<Params>,
) -> Result<Response, ApiError> {
    let (os, arch) = platform(&p)?;
    let attempt = p
        .attempt
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty());
    if let Some(id) = attempt {
        let (store, id2, who) = (state.store.clone(), id.to_string(), caller.sub.clone());
        let allowed = super::offload::store(move || {
            store.install_download_allowed(&id2, who.as_deref(), Utc::now())
        })
        .await?;
        if !allowed {
            return Err(ApiError::Forbidden(
                "attempt does not belong to you, expired, or already downloaded; take a fresh one-liner".into(),
            ));
        }
    }
    let mut releases: Vec<_> = live_objects(&state, &AGENT_RELEASES)
        .await?
        .into_iter()
        .filter(|o| release_matches(&o.name, os, arch))
        .collect();
    releases.sort_by_key(|o| std::cmp::Reverse(modified(o)));
    let label = match os {
        Os::Windows => "windows".to_string(),
        _ => format!("{}-{arch}", os.as_str()),
    };
    let release = releases.into_iter().next().ok_or_else(|| {
        ApiError::NotFound(format!(
            "no {label} agent release in agent_releases: publish one first (`kanade agent publish`)"
        ))
    })?;
    let key = release.name.clone();
    let e = embedded(&state).await?;
    let binary = {
        use tokio::io::AsyncReadExt;
        let store = open(&state, &AGENT_RELEASES).await?;
        let mut object = store
            .get(key.as_str())
            .await
            .map_err(|err| ApiError::NotFound(format!("release '{key}' unreadable: {err}")))?;
        let mut bytes = Vec::with_capacity(release.size);
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|err| ApiError::BadGateway(format!("read release '{key}': {err}")))?;
        bytes
    };
    let version = kanade_shared::bin_platform::base_version_of_key(&key).to_string();
    let toml = agent_toml(os, &e.nats_url);
    let readme = readme(&version, os, &e);
    let built = match os {
        Os::Windows => {
            let cmd = format!(
                "@echo off\r\nREM kanade-agent {version} installer\r\npowershell -NoProfile -ExecutionPolicy Bypass -File \"%~dp0install-agent.ps1\"\r\nif errorlevel 1 (echo Installation failed. & pause & exit /b 1)\r\necho kanade-agent {version} installed.\r\npause\r\n"
            );
            let ps1 = install_ps1(&version, &e);
            zip_archive(&[
                ("kanade-agent.exe", &binary),
                ("agent.toml", toml.as_bytes()),
                ("deploy-agent.ps1", DEPLOY_PS1.as_bytes()),
                ("install-agent.ps1", ps1.as_bytes()),
                ("install.cmd", cmd.as_bytes()),
                ("README.txt", readme.as_bytes()),
            ])
        }
        Os::Linux | Os::Macos => {
            let install = install_sh(os, &e);
            let (service, setup): ((&str, &str), (&str, &str)) = if os == Os::Linux {
                (
                    ("systemd/kanade-agent.service", SYSTEMD_UNIT),
                    ("setup-agent.sh", SETUP_LINUX),
                )
            } else {
                (
                    ("launchd/com.kanade.agent.plist", LAUNCHD_PLIST),
                    ("setup-agent-macos.sh", SETUP_MACOS),
                )
            };
            tar_gz(&[
                ("bin/kanade-agent", &binary, 0o755),
                ("etc/agent.toml", toml.as_bytes(), 0o644),
                (service.0, service.1.as_bytes(), 0o644),
                (setup.0, setup.1.as_bytes(), 0o755),
                ("install.sh", install.as_bytes(), 0o755),
                ("README.txt", readme.as_bytes(), 0o644),
            ])
        }
    }
    .map_err(|err| ApiError::Internal(format!("build the installer: {err}")))?;
    if let Some(id) = attempt {
        let (store, id2, who) = (state.store.clone(), id.to_string(), caller.sub.clone());
        let claimed = super::offload::store(move || {
            store.claim_install_download(&id2, who.as_deref(), os.as_str(), Utc::now())
        })
        .await?;
        if !claimed {
            return Err(ApiError::Forbidden(
                "attempt already used, ended or expired".into(),
            ));
        }
    }
    audit(
        &state.control,
        &caller,
        "agent_installer_download",
        &key,
        serde_json::json!({
            "version": version, "attempt_id": attempt, "os": os.as_str(), "arch": arch,
            "nats_url": e.nats_url, "token_embedded": e.token.is_some(),
            "user_pair_embedded": e.user_pair.is_some(),
            "command_keys_embedded": e.command_keys.is_some(),
        }),
    )
    .await;
    let (ctype, ext) = match os {
        Os::Windows => ("application/zip", "zip"),
        _ => ("application/gzip", "tar.gz"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, ctype.to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"kanade-agent-installer-{key}.{ext}\""),
            ),
        ],
        built,
    )
        .into_response())
}

/// Mints an attempt for `caller`; answers `(id, report key)`.
async fn issue(state: &AppState, caller: &Caller, os: &str) -> Result<(String, String), ApiError> {
    let id = uuid::Uuid::new_v4().to_string();
    let key = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let now = Utc::now();
    let attempt = kanade_storage::InstallAttempt {
        id: id.clone(),
        issuer: caller.sub.clone(),
        os: os.to_string(),
        key_hash: key_hash(&key),
        created_at: now,
        expires_at: now + ATTEMPT_TTL,
        status: "unreported".into(),
        download_claimed: false,
        seq: 0,
        events: Vec::new(),
    };
    let store = state.store.clone();
    super::offload::store(move || store.issue_install_attempt(&attempt)).await?;
    Ok((id, key))
}

/// Hex SHA-256 of a report key.
pub fn key_hash(key: &str) -> String {
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The caller's bearer token, which the one-liner downloads with.
fn bearer(headers: &HeaderMap) -> Result<String, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty() && literal_safe(t))
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::BadRequest("a one-liner needs the caller's Bearer token to embed".into())
        })
}

fn script(text: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}

/// What a one-liner embeds.
struct OneLiner {
    /// Where the backend is reached.
    base: String,
    /// The caller's token, which downloads the installer.
    token: String,
    /// The attempt minted for it and its report key.
    id: String,
    key: String,
}

async fn one_liner(
    state: &AppState,
    caller: &Caller,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
    os: &str,
) -> Result<OneLiner, ApiError> {
    let base = super::password_links::link_base(state, headers, peer.ip())?;
    let token = bearer(headers)?;
    let (id, key) = issue(state, caller, os).await?;
    Ok(OneLiner {
        base,
        token,
        id,
        key,
    })
}

/// `GET /api/agents/installer.sh`: `curl … | sudo sh` on Linux or macOS.
pub async fn one_liner_sh(
    State(state): State<AppState>,
    caller: Caller,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let OneLiner {
        base,
        token,
        id,
        key,
    } = one_liner(&state, &caller, peer, &headers, "unix").await?;
    Ok(script(format!(
        r#"#!/bin/sh
# kanade-agent one-line install (attempt {id}); run as root.
set -u
BASE={base}
ATTEMPT={id}
KEY={key}
SEQ=0
STAGE=platform
report() {{
  SEQ=$((SEQ + 1))
  kind=""
  [ -n "${{4:-}}" ] && kind=",\"error_kind\":\"$4\""
  curl -s --connect-timeout 2 --max-time 3 -X POST -H "X-Install-Key: $KEY" -H 'Content-Type: application/json' \
    -d "{{\"seq\":$SEQ,\"stage\":\"$1\",\"outcome\":\"$2\",\"exit_code\":$3$kind}}" \
    "$BASE/api/install-reports/$ATTEMPT" >/dev/null 2>&1 || true
}}
fail() {{
  code=$1
  [ "$code" = 0 ] && code=1
  case "$code" in
    126) kind=permission_denied ;;
    127) kind=file_not_found ;;
    *) case "$STAGE" in
         download) kind=http_error ;;
         extract) kind=invalid_archive ;;
         service_start) kind=service_error ;;
         connection_check) case "$code" in 3) kind=configuration_error ;; 4) kind=authentication_failed ;; *) kind=connection_failed ;; esac ;;
         *) kind=command_failed ;;
       esac ;;
  esac
  report "$STAGE" failed "$code" "$kind"
  echo "Installation attempt $ATTEMPT failed at $STAGE ($kind)." >&2
  exit "$code"
}}
report platform progress 0
case "$(uname -s)" in
  Linux) OS=linux ;;
  Darwin) OS=macos ;;
  *) fail 1 ;;
esac
case "$(uname -m)" in
  x86_64|amd64) ARCH=x86_64 ;;
  aarch64|arm64) ARCH=aarch64 ;;
  *) fail 1 ;;
esac
STAGE=temporary_directory; report "$STAGE" progress 0
TMP=$(mktemp -d) || fail $?
STAGE=download; report "$STAGE" progress 0
curl -fsSL -K - -o "$TMP/installer.tar.gz" "$BASE/api/agents/installer?os=$OS&arch=$ARCH&attempt=$ATTEMPT" <<CURLCFG || fail $?
header = "Authorization: Bearer {token}"
CURLCFG
STAGE=extract; report "$STAGE" progress 0
tar xzf "$TMP/installer.tar.gz" -C "$TMP" || fail $?
STAGE=install; report "$STAGE" progress 0
sh "$TMP/install.sh"
code=$?
if [ -f "$TMP/install-stage" ]; then STAGE=$(tail -n 1 "$TMP/install-stage"); fi
[ "$code" = 0 ] || fail "$code"
report complete succeeded 0
rm -rf "$TMP"
echo "kanade-agent installed (attempt $ATTEMPT)."
"#,
        base = sh_quote(&base),
    )))
}

/// `GET /api/agents/installer.ps1`: `irm … | iex` on Windows.
pub async fn one_liner_ps1(
    State(state): State<AppState>,
    caller: Caller,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let OneLiner {
        base,
        token,
        id,
        key,
    } = one_liner(&state, &caller, peer, &headers, "windows").await?;
    let text = format!(
        r#"# kanade-agent one-line install (attempt {id}); run elevated.
$ErrorActionPreference = 'Stop'
$base = {base}
$attempt = '{id}'
$key = '{key}'
$script:seq = 0
$script:stage = 'platform'
function Send-Report([string]$Stage, [string]$Outcome, [int]$Code, [string]$Kind) {{
  $script:seq++
  $body = @{{ seq = $script:seq; stage = $Stage; outcome = $Outcome; exit_code = $Code }}
  if ($Kind) {{ $body.error_kind = $Kind }}
  try {{ Invoke-RestMethod -Method Post -Uri "$base/api/install-reports/$attempt" -Headers @{{ 'X-Install-Key' = $key }} -ContentType 'application/json' -Body ($body | ConvertTo-Json -Compress) -TimeoutSec 3 | Out-Null }} catch {{ }}
}}
try {{
  Send-Report 'platform' 'progress' 0
  $script:stage = 'temporary_directory'; Send-Report $script:stage 'progress' 0
  $tmp = Join-Path $env:TEMP ("kanade-agent-install-" + [guid]::NewGuid())
  New-Item -ItemType Directory -Path $tmp | Out-Null
  $script:stage = 'download'; Send-Report $script:stage 'progress' 0
  Invoke-WebRequest -UseBasicParsing -Uri "$base/api/agents/installer?attempt=$attempt" -Headers @{{ Authorization = 'Bearer {token}' }} -OutFile (Join-Path $tmp 'installer.zip')
  $script:stage = 'extract'; Send-Report $script:stage 'progress' 0
  Expand-Archive -LiteralPath (Join-Path $tmp 'installer.zip') -DestinationPath $tmp
  $script:stage = 'install'; Send-Report $script:stage 'progress' 0
  & powershell -NoProfile -ExecutionPolicy Bypass -File (Join-Path $tmp 'install-agent.ps1')
  $code = $LASTEXITCODE
  $stageFile = Join-Path $tmp 'install-stage'
  if (Test-Path $stageFile) {{ $script:stage = (Get-Content $stageFile | Select-Object -Last 1) }}
  if ($code -ne 0) {{
    $kind = switch ($script:stage) {{ 'service_start' {{ 'service_error' }} 'connection_check' {{ if ($code -eq 3) {{ 'configuration_error' }} elseif ($code -eq 4) {{ 'authentication_failed' }} else {{ 'connection_failed' }} }} default {{ 'command_failed' }} }}
    Send-Report $script:stage 'failed' $code $kind
    Write-Host "Installation attempt $attempt failed at $($script:stage) ($kind)."
    exit $code
  }}
  Send-Report 'complete' 'succeeded' 0
  Remove-Item -Recurse -Force $tmp
  Write-Host "kanade-agent installed (attempt $attempt)."
}} catch {{
  $kind = switch ($script:stage) {{ 'download' {{ 'http_error' }} 'extract' {{ 'invalid_archive' }} default {{ 'command_failed' }} }}
  Send-Report $script:stage 'failed' 1 $kind
  Write-Host "Installation attempt $attempt failed at $($script:stage): $_"
  exit 1
}}
"#,
        base = ps_quote(&base),
    )
    .replace('\n', "\r\n");
    Ok(script(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_picked_by_platform_suffix() {
        assert!(release_matches("1.2.0", Os::Windows, "x86_64"));
        assert!(!release_matches(
            "1.2.0-linux-x86_64",
            Os::Windows,
            "x86_64"
        ));
        assert!(release_matches("1.2.0-linux-aarch64", Os::Linux, "aarch64"));
        assert!(!release_matches("1.2.0-linux-aarch64", Os::Linux, "x86_64"));
        assert!(release_matches("1.2.0-macos-aarch64", Os::Macos, "aarch64"));
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
        assert_eq!(ps_quote("a'b"), "'a''b'");
    }
}
