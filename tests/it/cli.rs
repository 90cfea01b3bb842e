//! The `connectors` binary: help, subcommands, configuration errors and local secrets.

use std::path::Path;
use std::process::{Command, Output};

fn connectors(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_connectors"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_explains_every_subcommand() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = connectors(dir.path(), &["--help"], &[]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for sub in ["serve", "migrate", "openapi", "keys"] {
        assert!(help.contains(sub), "{sub} in {help}");
    }
    let keys = text(&connectors(dir.path(), &["keys", "--help"], &[]).stdout);
    assert!(keys.contains("generate"), "{keys}");
}

#[test]
fn openapi_prints_the_committed_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = connectors(dir.path(), &["openapi"], &[]);
    assert!(out.status.success());
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json"))
        .expect("committed");
    assert!(
        text(&out.stdout) == committed,
        "`connectors openapi > openapi.json` is stale"
    );
}

#[test]
fn keys_generate_prints_a_fresh_32_byte_key() {
    use base64::Engine;
    let dir = tempfile::tempdir().expect("tempdir");
    let first = text(&connectors(dir.path(), &["keys", "generate"], &[]).stdout);
    let second = text(&connectors(dir.path(), &["keys", "generate"], &[]).stdout);
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(first.trim())
        .expect("base64");
    assert_eq!(decoded.len(), 32);
    assert_ne!(first, second);
}

#[test]
fn a_malformed_variable_stops_start_up_with_exit_code_2_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, value) in [
        ("POBLYSH_DB_MAX_CONNECTIONS", "lots"),
        ("POBLYSH_API_BIND_ADDR", "localhost:80"),
        ("POBLYSH_LOG_FORMAT", "yaml"),
    ] {
        let out = connectors(
            dir.path(),
            &["migrate"],
            &[("POBLYSH_PROFILE", "test"), (name, value)],
        );
        assert_eq!(out.status.code(), Some(2), "{name}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(name), "{stderr}");
    }
}

#[test]
fn the_default_profile_refuses_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = connectors(
        dir.path(),
        &["serve"],
        &[("POBLYSH_API_BIND_ADDR", "0.0.0.0:8080")],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("POBLYSH_API_BIND_ADDR"), "{stderr}");
    // No operator token was generated or printed.
    assert!(
        !text(&out.stdout).contains("token"),
        "{}",
        text(&out.stdout)
    );
    assert!(!dir.path().join("data").exists());
}

#[test]
fn a_malformed_dotenv_value_is_reported_like_an_environment_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(".env"), "POBLYSH_PROFILE=test\n").expect("write");
    std::fs::write(
        dir.path().join(".env.test"),
        "POBLYSH_DB_MAX_CONNECTIONS=0\n",
    )
    .expect("write");
    let out = connectors(dir.path(), &["migrate"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("POBLYSH_DB_MAX_CONNECTIONS"));
}

#[test]
fn prod_refuses_to_start_without_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = connectors(
        dir.path(),
        &["migrate"],
        &[
            ("POBLYSH_PROFILE", "prod"),
            ("POBLYSH_PUBLIC_BASE_URL", "https://connectors.example.com"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("POBLYSH_OPERATOR_TOKENS"));
}

#[test]
fn local_profile_generates_secrets_once_and_reuses_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = connectors(dir.path(), &["migrate"], &[("POBLYSH_LOG_FORMAT", "json")]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let token =
        std::fs::read_to_string(dir.path().join("data/operator_token")).expect("token file");
    assert!(
        text(&first.stderr).contains(token.trim()),
        "the token is shown once"
    );
    assert!(
        text(&first.stdout).contains("data/operator_token"),
        "the log says where"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in ["operator_token", "crypto_key"] {
            let mode = std::fs::metadata(dir.path().join("data").join(file))
                .expect("file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }
    assert!(
        dir.path().join("data/connectors.db").exists(),
        "the default database is in the data dir"
    );

    let second = connectors(dir.path(), &["migrate"], &[("POBLYSH_LOG_FORMAT", "json")]);
    assert!(second.status.success());
    assert!(
        !text(&second.stderr).contains(token.trim()),
        "shown only once"
    );
    assert!(!text(&second.stdout).contains(token.trim()), "never logged");
    let again =
        std::fs::read_to_string(dir.path().join("data/operator_token")).expect("token file");
    assert_eq!(token, again);
}

#[test]
fn serve_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_connectors"))
        .arg("serve")
        .current_dir(dir.path())
        .env_clear()
        .env("POBLYSH_PROFILE", "test")
        .env("POBLYSH_API_BIND_ADDR", &addr)
        .env("POBLYSH_DATA_DIR", dir.path().join("data"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let std_dir = dir.path().join("data");
    std::fs::create_dir_all(&std_dir).ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(std::time::Instant::now() < deadline, "server did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not stop after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn keys_rotate_runs_against_the_configured_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = connectors::crypto::CryptoKey::generate().to_base64();
    let old = connectors::crypto::CryptoKey::generate().to_base64();
    let out = connectors(
        dir.path(),
        &["keys", "rotate"],
        &[
            ("POBLYSH_PROFILE", "test"),
            ("POBLYSH_CRYPTO_KEY", key.as_str()),
            ("POBLYSH_CRYPTO_PREVIOUS_KEYS", old.as_str()),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("examined 0 sealed values"),
        "{}",
        text(&out.stdout)
    );
    let out = connectors(
        dir.path(),
        &["keys", "rotate"],
        &[
            ("POBLYSH_PROFILE", "test"),
            ("POBLYSH_CRYPTO_PREVIOUS_KEYS", "not-a-key"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("POBLYSH_CRYPTO_PREVIOUS_KEYS"));
}

#[tokio::test]
async fn a_running_service_never_logs_tokens_or_secrets() {
    use connectors::crypto::{Aad, CryptoKey, Vault};
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let key = CryptoKey::generate();
    let operator = "operator-token-that-must-not-be-logged";
    let log = std::fs::File::create(dir.path().join("log")).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_connectors"))
        .arg("serve")
        .current_dir(dir.path())
        .env_clear()
        .env("POBLYSH_PROFILE", "test")
        .env("POBLYSH_SANDBOX_ENABLED", "true")
        .env("POBLYSH_LOG_LEVEL", "debug")
        .env("POBLYSH_API_BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("POBLYSH_OPERATOR_TOKEN", operator)
        .env("POBLYSH_CRYPTO_KEY", key.to_base64().as_str())
        .stdout(log.try_clone().expect("clone"))
        .stderr(log)
        .spawn()
        .expect("spawn");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .expect("client");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "server did not start");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let tenant = uuid::Uuid::new_v4().to_string();
    let started: serde_json::Value = client
        .post(format!("{base}/connect/sandbox"))
        .bearer_auth(operator)
        .header("X-Tenant-Id", &tenant)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    // The service's authorize hop (binding cookie), then the sandbox's page, then the callback.
    let mut callback = started["authorize_url"].as_str().expect("url").to_string();
    for _ in 0..2 {
        let redirect = client.get(&callback).send().await.expect("sent");
        callback = redirect.headers()["location"]
            .to_str()
            .expect("ascii")
            .to_string();
    }
    let connected: serde_json::Value = client
        .get(&callback)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let id = connected["connection"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();

    // Open the stored tokens with the key the service used, then look for them in the log.
    let url = format!(
        "sqlite://{}",
        dir.path().join("data/connectors.db").display()
    );
    let store = connectors::store::connect(
        &url,
        &connectors::store::StoreOptions { max_connections: 1 },
    )
    .await
    .expect("store");
    let t: connectors::domain::TenantId = tenant.parse().expect("uuid");
    let sealed = store
        .connection_tokens(t, id.parse().expect("uuid"))
        .await
        .expect("read")
        .expect("row");
    let vault = Vault::new(key, vec![]);
    let aad = |field: &str| Aad::new(t, "sandbox", &id, field);
    let access = vault
        .open_str(&sealed.access_token.expect("access"), &aad("access_token"))
        .expect("opens");
    let refresh = vault
        .open_str(
            &sealed.refresh_token.expect("refresh"),
            &aad("refresh_token"),
        )
        .expect("opens");
    let logged = std::fs::read_to_string(dir.path().join("log")).expect("log");
    assert!(
        logged.contains("request completed"),
        "the log is written: {logged}"
    );
    let code = callback
        .split("code=")
        .nth(1)
        .and_then(|c| c.split('&').next())
        .expect("code");
    let state = callback
        .split("state=")
        .nth(1)
        .and_then(|c| c.split('&').next())
        .expect("state");
    for (what, secret) in [
        ("access token", access.expose()),
        ("refresh token", refresh.expose()),
        ("operator token", operator),
        ("authorization code", code),
        ("state", state),
    ] {
        assert!(!logged.contains(secret), "the {what} appears in the log");
    }
}
