//! The real binary as an operator runs it: first start generates the root token (printed
//! once, written 0600), logs never carry tokens or ID numbers, SIGTERM exits 0; and the
//! README's first session runs against it as written.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

struct Server {
    child: Child,
    port: u16,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

fn start(data_dir: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_onecard"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ONECARD_DATA_DIR", data_dir)
        .env("ONECARD_BIND", "127.0.0.1:0")
        .env("ONECARD_LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("binary starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let port = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("server logs that it listens");
        seen.push(line.clone());
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if v["message"] == "OneCard listening" {
                break v["port"].as_u64().unwrap() as u16;
            }
        }
    };
    Server {
        child,
        port,
        lines,
        seen,
    }
}

impl Server {
    fn stop(mut self) -> (i32, Vec<String>) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(line);
        }
        (status.code().unwrap_or(-1), self.seen)
    }
}

#[actix_web::test]
async fn first_start_prints_the_root_token_once_and_logs_never_carry_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let token_path = dir.path().join("root-token");
    let root = std::fs::read_to_string(&token_path)
        .unwrap()
        .trim()
        .to_string();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(dir.path().join("master-key"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    let base = format!("http://127.0.0.1:{}", server.port);
    let client = crate::helpers::client();
    let tenant: Value = client
        .post(format!("{base}/api/v1/tenants"))
        .bearer_auth(&root)
        .json(&json!({"name": "Proc", "kind": "k12", "edition": "standard"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let admin = tenant["admin_token"].as_str().unwrap().to_string();
    let id_number = "44030419990101123X";
    let res = client
        .post(format!("{base}/api/v1/users"))
        .bearer_auth(&admin)
        .json(&json!({"name": "Secretive", "number": "P-1", "id_number": id_number}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let bad = client
        .get(format!("{base}/api/v1/tenant?token={admin}"))
        .bearer_auth("wrong-token-value")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);

    let (code, lines) = server.stop();
    assert_eq!(code, 0, "SIGTERM drains and exits 0");
    let banner: Vec<_> = lines.iter().filter(|l| l.contains(&root)).collect();
    assert_eq!(
        banner.len(),
        1,
        "the root token is printed exactly once: {banner:?}"
    );
    assert!(!banner[0].starts_with('{'), "and not as a log record");
    for line in &lines {
        for secret in [admin.as_str(), id_number, "wrong-token-value"] {
            assert!(!line.contains(secret), "secret in log line: {line}");
        }
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"route\":\"/api/v1/users\"")),
        "requests are logged by route"
    );

    // A restart keeps the token and prints nothing new.
    let again = start(dir.path());
    let res = crate::helpers::client()
        .get(format!("http://127.0.0.1:{}/api/v1/audit", again.port))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (code, lines) = again.stop();
    assert_eq!(code, 0);
    assert!(!lines.iter().any(|l| l.contains(&root)));
}

#[test]
fn check_config_refuses_unknown_settings_and_hides_secrets() {
    let out = Command::new(env!("CARGO_BIN_EXE_onecard"))
        .arg("check-config")
        .env_clear()
        .env("ONECARD_ROOT_TOKEN", "r".repeat(40))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("configuration OK") && text.contains("(set)"),
        "{text}"
    );
    assert!(!text.contains(&"r".repeat(40)));
    let out = Command::new(env!("CARGO_BIN_EXE_onecard"))
        .arg("check-config")
        .env_clear()
        .env("ONECARD_DATABSE_URL", "typo")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ONECARD_DATABSE_URL"));
}

/// The README's first session, run as written (bash and curl) against the real binary
/// started as the README says, with only its address changed to the test's port.
#[actix_web::test]
async fn the_readmes_first_session_pays_for_a_lunch_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let from = readme.find("## A first session").expect("the section");
    let block = readme[from..]
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("its first sh block");
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"));
    let script = block.replace(
        "http://127.0.0.1:8080",
        &format!("http://127.0.0.1:{}", server.port),
    );
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || {
            Command::new("bash")
                .args(["-euo", "pipefail", "-c", &script])
                .current_dir(dir)
                .output()
                .expect("bash runs")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for answer in [
        r#""status":"succeeded""#,
        r#""breakdown":{"coupon":0,"subsidy":0,"balance":350,"deferred":0}"#,
        r#""balance":1650"#,
        r#""balanced":true"#,
        "merchant_id,merchant_number,merchant_name,payments,gross,refunds,net\n",
        ",North Hall,1,350,0,350\n",
        "/screen#token=",
    ] {
        assert!(stdout.contains(answer), "{answer} missing:\n{stdout}");
    }
    let (code, _) = server.stop();
    assert_eq!(code, 0);
}
