//! A small W3C WebDriver client over hyper, driving Debian's headless Chromium through
//! chromedriver (both started here, on 127.0.0.1 ephemeral ports, and killed on drop).
//! Only the commands the page tests use: navigate (and back), windows, run a script,
//! find, click, keys, screenshot, and the browser console log.

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The key WebDriver uses to mark an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: super::util::TestClient,
    profile: super::util::TempDir,
    pub downloads: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium (1280×900, own profile and
    /// download directory). Panics with the reason when either is missing: `.ci/run`
    /// installs them.
    pub async fn start() -> Browser {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "{CHROMEDRIVER} and {CHROMIUM} are required (apt-get install chromium chromium-driver; .ci/run does it)"
        );
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let client = super::util::client();
        let profile = super::util::TempDir::new("chromium");
        let downloads = profile.path().join("downloads");
        std::fs::create_dir_all(&downloads).unwrap();
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            client,
            downloads,
            profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(v) = browser.raw("GET", "/status", None).await {
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let user_data = browser.profile.path().join("profile");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
            "--lang=en-US",
            &format!("--user-data-dir={}", user_data.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": args,
                "prefs": {
                    "download.default_directory": browser.downloads.display().to_string(),
                    "download.prompt_for_download": false,
                    "download.directory_upgrade": true,
                    "safebrowsing.enabled": false,
                },
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let created = browser
            .raw("POST", "/session", Some(caps))
            .await
            .expect("cannot create a browser session");
        browser.session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {created}"))
            .to_string();
        browser
    }

    async fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("WebDriver {method} {path}: {status} {value}"));
        }
        Ok(value)
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        match self.raw(method, &path, body).await {
            Ok(v) => v["value"].clone(),
            Err(e) => panic!("{e}"),
        }
    }

    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// The browser's Back button.
    pub async fn back(&self) {
        self.cmd("POST", "/back", Some(json!({}))).await;
    }

    /// Opens a new top-level window (not a background tab: each window is visible)
    /// and returns its handle; the session stays in the current one.
    pub async fn new_window(&self) -> String {
        let v = self
            .cmd("POST", "/window/new", Some(json!({"type": "window"})))
            .await;
        v["handle"]
            .as_str()
            .unwrap_or_else(|| panic!("no window handle in {v}"))
            .to_string()
    }

    /// Minimizes the current window (the page in it is then hidden).
    pub async fn minimize(&self) {
        self.cmd("POST", "/window/minimize", Some(json!({}))).await;
    }

    /// The handle of the window commands go to.
    pub async fn window(&self) -> String {
        let v = self.cmd("GET", "/window", None).await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// Sends the following commands to the window `handle`.
    pub async fn switch_to(&self, handle: &str) {
        self.cmd("POST", "/window", Some(json!({ "handle": handle })))
            .await;
    }

    pub async fn refresh(&self) {
        self.cmd("POST", "/refresh", Some(json!({}))).await;
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns its value.
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Runs `script` as an async function body (it may `await`; `arguments[i]` are
    /// `args`) and returns what it returns.
    pub async fn js_await(&self, script: &str, args: Value) -> Value {
        let wrapped = format!(
            "const done = arguments[arguments.length - 1]; (async function () {{ {script} }}).apply(null, Array.from(arguments).slice(0, -1)).then(done, (e) => done({{error: String(e)}}))"
        );
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({"script": wrapped, "args": args})),
        )
        .await
    }

    /// Polls `script` (returning a truthy value when done) until it holds.
    pub async fn wait(&self, what: &str, script: &str, args: Value) -> Value {
        // Generous: the tests share two cores with builds.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.js(script, args.clone()).await;
            if !(v.is_null() || v == false || v == 0 || v == "") {
                return v;
            }
            if Instant::now() > deadline {
                let body = self.js("return document.body.innerText", json!([])).await;
                panic!("timed out waiting for {what}; page text:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    /// Clicks the element once it exists: pages render what they fetch a moment
    /// after the click that asked for it (a round's tabs after its row).
    pub async fn click(&self, css: &str) {
        self.wait(
            &format!("element {css}"),
            "return !!document.querySelector(arguments[0])",
            json!([css]),
        )
        .await;
        let el = self.find(css).await;
        self.cmd("POST", &format!("/element/{el}/click"), Some(json!({})))
            .await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.cmd(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Presses keys on whatever has the focus (WebDriver key actions; "\u{E007}" is Enter).
    pub async fn keys(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|c| {
                [
                    json!({"type": "keyDown", "value": c.to_string()}),
                    json!({"type": "keyUp", "value": c.to_string()}),
                ]
            })
            .collect();
        self.cmd(
            "POST",
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        )
        .await;
    }

    pub async fn screenshot(&self) -> Vec<u8> {
        let v = self.cmd("GET", "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("screenshot is not base64")
    }

    /// The browser console since the last call (chromedriver's `goog:loggingPrefs` log).
    pub async fn console(&self) -> Vec<Value> {
        let v = self
            .cmd("POST", "/se/log", Some(json!({"type": "browser"})))
            .await;
        v.as_array().cloned().unwrap_or_default()
    }

    pub async fn html(&self) -> String {
        self.js("return document.documentElement.outerHTML", json!([]))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn text(&self, css: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null",
            json!([css]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    pub async fn count(&self, css: &str) -> u64 {
        self.js(
            "return document.querySelectorAll(arguments[0]).length",
            json!([css]),
        )
        .await
        .as_u64()
        .unwrap_or(0)
    }

    pub async fn wait_count(&self, css: &str, n: u64) {
        self.wait(
            &format!("{n} × {css}"),
            "return document.querySelectorAll(arguments[0]).length === arguments[1]",
            json!([css, n]),
        )
        .await;
    }

    pub async fn wait_text(&self, css: &str, needle: &str) {
        self.wait(
            &format!("{css} to contain {needle:?}"),
            "const e = document.querySelector(arguments[0]); return !!e && e.textContent.includes(arguments[1])",
            json!([css, needle]),
        )
        .await;
    }

    pub async fn close(mut self) {
        let path = format!("/session/{}", self.session);
        if self.raw("DELETE", &path, None).await.is_ok() {
            self.session.clear();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A test that panicked never called close(): end the session (and with it the
        // browser) with a blocking request, then stop chromedriver.
        if !self.session.is_empty() {
            use std::io::{Read, Write};
            let addr = self.base.trim_start_matches("http://").to_string();
            if let Ok(mut stream) = std::net::TcpStream::connect(addr) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = write!(
                    stream,
                    "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                    self.session
                );
                let _ = stream.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
