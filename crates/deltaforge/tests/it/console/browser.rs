//! A real headless Chromium driven over WebDriver (`fantoccini`), through
//! the chromedriver that `scripts/services/chromium.sh` installs (Debian's
//! `chromium` and `chromium-driver`) and starts.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// One browser session (its own profile; closed on [`Browser::close`]).
pub struct Browser {
    pub client: Client,
}

impl Browser {
    /// Opens a headless Chromium window of `width`×`height` CSS pixels.
    pub async fn open(width: u32, height: u32) -> Browser {
        let webdriver = crate::support::service("chromium");
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                // Root in CI has no user namespace sandbox; /dev/shm may be small.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--hide-scrollbars", "--force-device-scale-factor=1", format!("--window-size={width},{height}")]
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&webdriver)
            .await
            .unwrap_or_else(|e| panic!("cannot open a Chromium session through {webdriver}: {e}"));
        Browser { client }
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The text of the first element matching `css`, if any.
    pub async fn text(&self, css: &str) -> Option<String> {
        let v = self
            .js(&format!("const e = document.querySelector({}); return e ? e.textContent : null;", json!(css)))
            .await;
        v.as_str().map(str::to_string)
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) {
        let el = self.wait_for_css(css).await;
        el.click().await.unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// Clicks `css`, then the confirmation dialog's Confirm button.
    pub async fn click_confirmed(&self, css: &str) {
        self.click(css).await;
        self.click("dialog[open] #confirm-ok").await;
    }

    /// Waits (10 s) for an element matching `css`.
    pub async fn wait_for_css(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css} within 10 s: {e}"))
    }

    /// Replaces the value of the input or textarea `css` with `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        let el = self.wait_for_css(css).await;
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    /// Navigates to `url`.
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    /// Writes a PNG of the window to `docs/screenshots/{name}.png` when
    /// `DELTAFORGE_UPDATE_SCREENSHOTS=1`.
    pub async fn screenshot(&self, name: &str) {
        if std::env::var("DELTAFORGE_UPDATE_SCREENSHOTS").as_deref() != Ok("1") {
            return;
        }
        // The whole page: the window grows to the document's height for the shot.
        let (w, h) = self.client.get_window_size().await.expect("window size");
        let full = self.js("return document.documentElement.scrollHeight").await.as_u64().unwrap_or(h);
        self.client.set_window_size(w as u32, full.clamp(h, 4000) as u32).await.expect("resize");
        self.js("window.scrollTo(0, 0)").await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let png = self.client.screenshot().await.expect("screenshot");
        self.client.set_window_size(w as u32, h as u32).await.expect("resize");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        eprintln!("wrote docs/screenshots/{name}.png");
    }

    /// Ends the session (and its Chromium).
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after
/// `timeout` with `what` and the last page text.
pub async fn eventually<T, F, Fut>(browser: &Browser, what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            let page = browser.text("body").await.unwrap_or_default();
            panic!("{what}: not within {timeout:?}; the page shows:\n{page}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
