//! The live pages in a real browser: runs `tests/browser/pages.mjs` (playwright-core and
//! Debian's chromium) against the real server. Needs `node`, `/usr/bin/chromium` (or
//! `CHROMIUM`) and `npm ci` in `tests/browser`; `.ci/run` installs them. Outside CI a
//! missing piece skips the test loudly; under `CI=true` it fails.
//!
//! Screenshots go to `target/screenshots`, or to `ONECARD_SCREENSHOTS` (the README's
//! pictures are made with `ONECARD_SCREENSHOTS=docs/screenshots`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::helpers::{in_ci, spawn_app, warn_skipped, Engine, ROOT_TOKEN};

fn missing() -> Option<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is not installed".into());
    }
    if !Path::new(&chromium).exists() {
        return Some(format!("{chromium} is missing (apt-get install chromium)"));
    }
    if !dir.join("node_modules/playwright-core").exists() {
        return Some("playwright-core is missing (npm ci in tests/browser)".into());
    }
    None
}

#[actix_web::test]
async fn the_till_screen_dashboard_and_card_page_work_in_chromium() {
    if let Some(why) = missing() {
        assert!(!in_ci(), "CI=true but the browser tests cannot run: {why}");
        warn_skipped("browser tests are", &why);
        return;
    }
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shots: PathBuf = std::env::var("ONECARD_SCREENSHOTS")
        .map(|p| root.join(p))
        .unwrap_or_else(|_| root.join("target/screenshots"));
    // The server's clock follows real time here, as a deployed one does (a page tells a
    // new payment from a changed one by its timestamps).
    let clock = app.clock.clone();
    let ticker = tokio::spawn(async move {
        let mut last = std::time::Instant::now();
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let now = std::time::Instant::now();
            clock.advance(jiff::SignedDuration::try_from(now - last).unwrap_or_default());
            last = now;
        }
    });
    let base = app.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(root.join("tests/browser/pages.mjs"))
            .arg(&base)
            .arg(ROOT_TOKEN)
            .arg(&shots)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    ticker.abort();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "browser tests failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("browser tests: ok"), "{stdout}");
}
