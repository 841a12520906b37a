//! The operator console (`/ops`). Over HTTP on SQLite and PostgreSQL: only an `admin` key
//! signs in; the session cookie is HttpOnly and SameSite=Strict; pages carry a strict CSP; a
//! POST without the session's CSRF token is refused; sign-out ends the session. In headless
//! Chromium (Debian `chromium` + `chromium-driver`, driven through chromedriver with
//! fantoccini): an operator signs in, sees a connector failing against a loopback provider,
//! pauses it, sees a message wait, resumes it, retries the dead letters in bulk, resolves an
//! unmatched text, reprocesses an HL7 error and signs out. Screenshots are saved under
//! `target/console-screenshots/`.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::provider::{
    FakeProvider, Flavor, TWILIO_ACCOUNT, quick_retries, signed_twilio_post, twilio_connector,
};
use common::wait::{wait_for, wait_until};
use common::{Backend, TestDaemon, TestDb};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use switchboard::config::Config;
use switchboard::store::NewApiKey;

const WAIT: Duration = Duration::from_secs(30);
const FROM: &str = "+14155550000";

/// A key of organization `north` with `scopes`.
async fn key_with(daemon: &TestDaemon, scopes: &str) -> String {
    let token = switchboard::http::new_token().expect("token");
    daemon
        .core
        .store
        .api_keys()
        .create(&NewApiKey {
            organization_id: daemon.organization_id.clone(),
            name: "console test".into(),
            key_hash: switchboard::http::hash_token(&token),
            scopes: scopes.into(),
            expires_at: None,
        })
        .await
        .expect("key");
    token
}

/// A client that keeps no cookies by itself and follows no redirects: the test reads them.
fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// `name=value` of the response's `Set-Cookie` for `name`, and the whole header.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            let pair = v.split(';').next().unwrap_or_default().to_string();
            (pair, v.to_string())
        })
}

fn hidden_csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..].split('"').next().expect("value").to_string()
}

/// Signs in with `key` over plain HTTP; the response to the sign-in POST.
async fn sign_in(daemon: &TestDaemon, client: &reqwest::Client, key: &str) -> reqwest::Response {
    let form = client
        .get(daemon.url("/ops/sign-in"))
        .send()
        .await
        .expect("sign-in page");
    assert_eq!(form.status(), 200);
    let (pre, _) = set_cookie(&form, "sb_ops_pre").expect("pre-session cookie");
    let csrf = hidden_csrf(&form.text().await.expect("html"));
    client
        .post(daemon.url("/ops/sign-in"))
        .header("cookie", pre)
        .form(&[("csrf", csrf.as_str()), ("key", key)])
        .send()
        .await
        .expect("sign in")
}

async fn sessions_keys_and_csrf(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut daemon = TestDaemon::start(db.config()).await;
    let client = raw_client();

    // Not signed in: sent to the sign-in page, which has the strict policy.
    let home = client
        .get(daemon.url("/ops"))
        .send()
        .await
        .expect("GET /ops");
    assert_eq!(home.status(), 303);
    assert_eq!(home.headers()["location"], "/ops/sign-in");
    let form = client
        .get(daemon.url("/ops/sign-in"))
        .send()
        .await
        .expect("form");
    let csp = form.headers()["content-security-policy"]
        .to_str()
        .expect("csp");
    assert!(csp.starts_with("default-src 'self'"), "{csp}");

    // A key without admin cannot sign in; nor can a wrong key.
    let read_only = key_with(&daemon, "send read").await;
    let refused = sign_in(&daemon, &client, &read_only).await;
    assert_eq!(refused.status(), 401);
    assert!(set_cookie(&refused, "sb_ops").is_none());
    assert!(refused.text().await.expect("html").contains("admin scope"));
    assert_eq!(sign_in(&daemon, &client, "sbk_nosuch").await.status(), 401);
    // Sign-in without its CSRF token is refused.
    let forged = client
        .post(daemon.url("/ops/sign-in"))
        .form(&[("key", daemon.key.as_str())])
        .send()
        .await
        .expect("forged sign-in");
    assert_eq!(forged.status(), 403);

    let admin = key_with(&daemon, "admin").await;
    let signed = sign_in(&daemon, &client, &admin).await;
    assert_eq!(signed.status(), 303);
    let (session, header) = set_cookie(&signed, "sb_ops").expect("session cookie");
    assert!(header.contains("HttpOnly"), "{header}");
    assert!(header.contains("SameSite=Strict"), "{header}");
    assert!(
        !header.contains("Secure"),
        "plain HTTP without public_url: {header}"
    );
    let home = client
        .get(daemon.url("/ops"))
        .header("cookie", &session)
        .send()
        .await
        .expect("home");
    assert_eq!(home.status(), 200);
    let html = home.text().await.expect("html");
    assert!(html.contains("id=\"channel-sms\""), "{html}");
    let csrf = hidden_csrf(&html);

    // A cross-site POST (no token, or another one) is refused and changes nothing.
    for token in [None, Some("sbk_forged")] {
        let mut form = vec![];
        if let Some(token) = token {
            form.push(("csrf", token));
        }
        let forged = client
            .post(daemon.url("/ops/channels/sms/pause"))
            .header("cookie", &session)
            .form(&form)
            .send()
            .await
            .expect("forged");
        assert_eq!(forged.status(), 403);
    }
    let view = daemon.get_json("/v1/channels").await;
    assert!(
        view["channels"]
            .as_array()
            .expect("channels")
            .iter()
            .all(|c| c["state"] != "paused"),
        "{view:#}"
    );
    // With it, the pause is made and audited under the console's key.
    let paused = client
        .post(daemon.url("/ops/channels/sms/pause"))
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("pause");
    assert_eq!(paused.status(), 303);
    let view = daemon.get_json("/v1/channels").await;
    let sms = view["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .find(|c| c["channel"] == "sms")
        .expect("sms");
    assert_eq!(sms["state"], "paused");
    assert!(
        sms["paused"]["paused_by"]
            .as_str()
            .is_some_and(|by| by.starts_with("console:api_key:")),
        "{sms:#}"
    );

    // A session left idle longer than server.console_idle_secs (900 s) has ended.
    let idle = sign_in(&daemon, &client, &admin).await;
    let (idle, _) = set_cookie(&idle, "sb_ops").expect("second session");
    switchboard::store::on_db!(daemon.core.store.db(), |pool| sqlx::query(
        "UPDATE console_sessions SET last_seen_at = last_seen_at - 901000
         WHERE last_seen_at = (SELECT MAX(last_seen_at) FROM console_sessions)"
    )
    .execute(pool)
    .await
    .map(|_| ()))
    .expect("age the session");
    let expired = client
        .get(daemon.url("/ops"))
        .header("cookie", &idle)
        .send()
        .await
        .expect("home");
    assert_eq!(expired.status(), 303, "an idle session ends");

    // Sign-out ends the session on the server, whatever the browser keeps.
    let out = client
        .post(daemon.url("/ops/sign-out"))
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("sign out");
    assert_eq!(out.status(), 303);
    let after = client
        .get(daemon.url("/ops"))
        .header("cookie", &session)
        .send()
        .await
        .expect("home");
    assert_eq!(after.status(), 303, "the session is gone");

    // A session whose key is revoked ends too; `public_url` https makes the cookie Secure.
    daemon.stop().await;
    let mut config = db.config();
    config.server.public_url = Some("https://gw.example.org".into());
    let mut daemon = TestDaemon::start(config).await;
    let signed = sign_in(&daemon, &client, &admin).await;
    let (session, header) = set_cookie(&signed, "sb_ops").expect("session cookie");
    assert!(header.contains("; Secure"), "{header}");
    let id = daemon
        .core
        .store
        .api_keys()
        .list(Some(&daemon.organization_id))
        .await
        .expect("keys")
        .into_iter()
        .find(|k| k.scopes == "admin")
        .expect("the admin key")
        .id;
    daemon
        .core
        .store
        .api_keys()
        .revoke(&id)
        .await
        .expect("revoke");
    wait_for("the revoked key's session to end", WAIT, async || {
        client
            .get(daemon.url("/ops"))
            .header("cookie", &session)
            .send()
            .await
            .expect("home")
            .status()
            == 303
    })
    .await;
    daemon.stop().await;
}
both_databases!(sessions_keys_and_csrf, super::sessions_keys_and_csrf);

/// The text of the element with `id` in `html` (up to its closing tag).
fn element(html: &str, id: &str) -> String {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let start = at + html[at..].find('>').expect("tag end") + 1;
    let end = start + html[start..].find("</td>").expect("cell end");
    html[start..end].to_string()
}

/// The home page's overview: deliveries per minute, the reminder job's last and next run,
/// Direct MDNs awaited and overdue, certificates expiring within 30 days, the HL7 peer
/// connected right now.
async fn home_overview(backend: Backend) {
    let db = TestDb::new(backend).await;
    let pki = common::pki::Pki::new();
    pki.ca("ca")
        .leaf("ca", "us", "email:us@direct.north.example");
    let mut config = db.config();
    config.hl7.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.hl7.organization = "north".into();
    config.reminders.enabled = true;
    let direct = format!(
        "address = \"us@direct.north.example\"\norganization = \"north\"\n\
         certificate = \"{cert}\"\nprivate_key = {{ file = \"{key}\" }}\n\
         trust = [{{ files = [\"{ca}\"] }}]\ndns = {{ enabled = false }}\n\
         ldap = {{ enabled = false }}\n\
         smtp = {{ host = \"127.0.0.1\", port = 9, tls = \"none\", timeout_secs = 1 }}\n",
        cert = pki.path("us.pem").display(),
        key = pki.path("us.key").display(),
        ca = pki.path("ca.pem").display(),
    );
    config.connectors.insert(
        "hisp".into(),
        switchboard::config::ConnectorConfig::Direct(toml::from_str(&direct).expect("direct")),
    );
    let mut daemon = TestDaemon::start(config).await;
    let client = raw_client();
    let signed_in = sign_in(&daemon, &client, &daemon.key).await;
    assert_eq!(signed_in.status(), 303);
    let (session, _) = set_cookie(&signed_in, "sb_ops").expect("session");

    // An HL7 peer stays connected while the page is read.
    let hl7 = daemon
        .daemon
        .as_ref()
        .and_then(|d| d.hl7_addr)
        .expect("hl7 listener");
    let _peer = tokio::net::TcpStream::connect(hl7)
        .await
        .expect("MLLP connect");
    // Two texts delivered now; one delivery is then made a Direct message the HISP took
    // 40 minutes ago and that has no processed MDN yet (over half the one-hour timeout).
    let (m1, d1) = sms(&daemon, "+14155550101").await;
    let (m2, _) = sms(&daemon, "+14155550102").await;
    for m in [&m1, &m2] {
        daemon.wait_terminal(m, WAIT).await;
    }
    let forty_minutes_ago = switchboard::store::now_ms() - 40 * 60 * 1000;
    switchboard::store::on_db!(daemon.core.store.db(), |pool| sqlx::query(
        "UPDATE deliveries SET channel = 'direct', connector = 'hisp', status = 'sent',
                updated_at = $2 WHERE id = $1"
    )
    .bind(&d1)
    .bind(forty_minutes_ago)
    .execute(pool)
    .await
    .map(|_| ()))
    .expect("update");

    let page = async || {
        let response = client
            .get(daemon.url("/ops"))
            .header("cookie", &session)
            .send()
            .await
            .expect("home");
        assert_eq!(response.status(), 200);
        response.text().await.expect("html")
    };
    // The start-up reminder pass has run and is recorded.
    wait_for("the reminder run on the home page", WAIT, async || {
        element(&page().await, "reminders-last-run").contains("(ok;")
    })
    .await;
    let html = page().await;
    assert!(
        element(&html, "reminders-next-run").contains('T'),
        "{}",
        element(&html, "reminders-next-run")
    );
    let sms_row = &html[html.find("id=\"channel-sms\"").expect("sms row")..];
    let marker = "class=\"per-minute\">";
    let per_minute = &sms_row[sms_row.find(marker).expect("per minute") + marker.len()..];
    assert!(per_minute.starts_with("0.2<"), "{}", &per_minute[..20]);
    assert!(
        element(&html, "mdn-awaiting").starts_with("1 (oldest 2"),
        "{}",
        element(&html, "mdn-awaiting")
    );
    assert_eq!(element(&html, "mdn-overdue"), "1");
    assert_eq!(element(&html, "mdn-expired"), "0");
    let certificates = element(&html, "certificates");
    assert!(
        certificates.contains("us@direct.north.example")
            && certificates.contains("expires within 30 days"),
        "{certificates}"
    );
    assert!(
        element(&html, "hl7-peers").contains("127.0.0.1 (1 open"),
        "{}",
        element(&html, "hl7-peers")
    );
    daemon.stop().await;
}
both_databases!(home_overview, super::home_overview);

// ------------------------------------------------------------------------------ Chromium

struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn chromedriver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian chromium-driver; .ci/peers installs it)");
    let driver = Driver { child, port };
    let http = reqwest::Client::new();
    wait_for("chromedriver to listen", WAIT, async || {
        http.get(format!("http://127.0.0.1:{port}/status"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    driver
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium", "args": [
            "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--window-size=1400,1100"]}),
    );
    ClientBuilder::native()
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn shot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("screenshot");
    std::fs::write(screenshots().join(format!("{name}.png")), png).expect("save screenshot");
}

/// The text of `css` once the page shows it and it satisfies `want` (a click that submits a
/// form returns before the next page is in).
async fn seen(browser: &Client, css: &str, want: impl Fn(&str) -> bool) -> String {
    wait_until(format!("{css} as expected on the page"), WAIT, async || {
        let element = browser.find(Locator::Css(css)).await.ok()?;
        let text = element.text().await.ok()?;
        want(&text).then_some(text)
    })
    .await
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .expect("click");
}

fn config(db: &TestDb, provider: &FakeProvider) -> Config {
    let mut config = db.config();
    config.connectors.insert(
        "twilio".into(),
        twilio_connector(db, &provider.base_url(), FROM, Some("north"), 2),
    );
    config
        .channels
        .insert("sms".into(), quick_retries("twilio", 1));
    config.hl7.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.hl7.organization = "north".into();
    config.hl7.processing_ids = vec!["P".into()];
    config
}

async fn sms(daemon: &TestDaemon, to: &str) -> (String, String) {
    let created: Value = daemon
        .post_message(json!({"body": "See you Tuesday",
            "recipients": [{"address": to, "channel": "sms"}]}))
        .await
        .json()
        .await
        .expect("json");
    (
        created["id"].as_str().expect("id").to_string(),
        created["deliveries"][0]["id"]
            .as_str()
            .expect("delivery")
            .to_string(),
    )
}

async fn status_of(daemon: &TestDaemon, message: &str) -> Value {
    daemon.get_json(&format!("/v1/messages/{message}")).await["deliveries"][0].clone()
}

async fn put_patient(daemon: &TestDaemon, external_id: &str, phone: &str) {
    let response = daemon
        .http
        .put(daemon.url(&format!("/v1/patients/{external_id}")))
        .bearer_auth(&daemon.key)
        .json(&json!({"family_name": "Rivera", "given_name": "Ana",
            "contact_points": [{"system": "sms", "value": phone}]}))
        .send()
        .await
        .expect("put patient");
    assert!(response.status().is_success());
}

/// The whole operator flow in headless Chromium (SQLite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_the_gateway_from_the_console() {
    let db = TestDb::new(Backend::Sqlite).await;
    let provider = FakeProvider::start(Flavor::Twilio).await;
    // The provider is down for the first two texts: each is dead-lettered (one attempt).
    provider.script(vec![
        FakeProvider::twilio_error(503, 20503, "Service unavailable"),
        FakeProvider::twilio_error(503, 20503, "Service unavailable"),
    ]);
    let mut daemon = TestDaemon::start(config(&db, &provider)).await;
    let mut dead = Vec::new();
    for to in ["+14155550101", "+14155550102"] {
        let (message, _) = sms(&daemon, to).await;
        let done = daemon.wait_terminal(&message, WAIT).await;
        assert_eq!(done["deliveries"][0]["status"], "failed", "{done:#}");
        dead.push(message);
    }
    // An unmatched text (two patients share the number) and a rejected HL7 message.
    put_patient(&daemon, "twin-a", "+1 415 555 0199").await;
    put_patient(&daemon, "twin-b", "4155550199").await;
    let answer = signed_twilio_post(
        &daemon,
        "/hooks/twilio/inbound",
        &[
            ("AccountSid", TWILIO_ACCOUNT),
            ("MessageSid", "SM20000000000000000000000000000001"),
            ("From", "+14155550199"),
            ("To", FROM),
            ("Body", "Can I move my appointment?"),
            ("NumMedia", "0"),
        ],
    )
    .await;
    assert_eq!(answer.status(), 200);
    let hl7_addr = daemon
        .daemon
        .as_ref()
        .and_then(|d| d.hl7_addr)
        .expect("listener");
    let acks = switchboard::hl7::client::send(
        &hl7_addr.to_string(),
        &["MSH|^~\\&|EHR|CLINIC|SB|SB|20240101120000||ADT^A04|T9|T|2.5.1\rEVN|A04|20240101\rPID|1||MRN-9^^^CLINIC^MR||Test^Pat||19700101|F\r".to_string()],
        Duration::from_secs(10),
    )
    .await
    .expect("hl7");
    assert_eq!(acks[0].0, "AR");

    let driver = chromedriver().await;
    let browser = browser(&driver).await;
    let admin = key_with(&daemon, "admin").await;
    let read_only = key_with(&daemon, "read").await;

    // A key without admin is refused.
    browser.goto(&daemon.url("/ops")).await.expect("goto");
    browser
        .find(Locator::Css("#key"))
        .await
        .expect("key field")
        .send_keys(&read_only)
        .await
        .expect("type");
    click(&browser, "#sign-in button").await;
    seen(&browser, "#error", |t| t.contains("admin scope")).await;

    // Sign in; sms on the failing provider shows failing.
    browser
        .find(Locator::Css("#key"))
        .await
        .expect("key field")
        .send_keys(&admin)
        .await
        .expect("type");
    click(&browser, "#sign-in button").await;
    seen(&browser, "#channel-sms .state", |t| t == "failing").await;
    seen(&browser, "#dead-letter-count", |t| t == "2").await;
    seen(&browser, "#unmatched-count", |t| t == "1").await;
    shot(&browser, "1-home-failing").await;

    // Pause the connector: a new text waits (queued, no attempt).
    click(&browser, "#pause-connector-twilio").await;
    seen(&browser, "#connector-twilio .state", |t| {
        t.starts_with("paused")
    })
    .await;
    let (waiting, delivery) = sms(&daemon, "+14155550103").await;
    wait_for("the text set aside while paused", WAIT, async || {
        let (enqueued_at,): (Option<i64>,) = switchboard::store::on_db!(
            daemon.core.store.db(),
            |pool| sqlx::query_as("SELECT enqueued_at FROM deliveries WHERE id = $1")
                .bind(&delivery)
                .fetch_one(pool)
                .await
        )
        .expect("delivery");
        enqueued_at.is_none()
    })
    .await;
    let view = status_of(&daemon, &waiting).await;
    assert_eq!(
        (&view["status"], &view["attempts"]),
        (&json!("queued"), &json!(0))
    );
    browser.goto(&daemon.url("/ops")).await.expect("reload");
    seen(&browser, "#channel-sms .waiting", |t| t == "1").await;
    shot(&browser, "2-paused-waiting").await;

    // Resume: it goes out.
    click(&browser, "#resume-connector-twilio").await;
    seen(&browser, "#notice", |t| {
        t.contains("1 waiting deliveries enqueued")
    })
    .await;
    wait_until("the waiting text sent", WAIT, async || {
        let view = status_of(&daemon, &waiting).await;
        (view["status"] == "sent").then_some(())
    })
    .await;

    // Retry the dead letters in bulk: both go out now.
    browser
        .goto(&daemon.url("/ops/dead-letters"))
        .await
        .expect("dead letters");
    assert_eq!(
        browser
            .find_all(Locator::Css("tr.dead-letter"))
            .await
            .expect("rows")
            .len(),
        2
    );
    click(&browser, "#retry-all").await;
    seen(&browser, "#notice", |t| t.contains("2 retried")).await;
    seen(&browser, "#none", |t| t.contains("No dead letters")).await;
    shot(&browser, "3-dead-letters-retried").await;
    wait_for("the retried texts sent", WAIT, async || {
        provider.sends().len() == 5
    })
    .await;

    // Resolve the unmatched text to a patient.
    browser
        .goto(&daemon.url("/ops/inbound"))
        .await
        .expect("inbound");
    browser
        .find(Locator::Css("tr.inbound-item input[name=patient]"))
        .await
        .expect("patient field")
        .send_keys("twin-a")
        .await
        .expect("type");
    click(&browser, "tr.inbound-item form[action$=resolve] button").await;
    seen(&browser, "#notice", |t| t.contains("resolved")).await;
    shot(&browser, "4-inbound-resolved").await;
    let filed = daemon.get_json("/v1/inbound?status=filed").await;
    assert_eq!(
        filed["items"].as_array().map(Vec::len),
        Some(1),
        "{filed:#}"
    );

    // The HL7 error: masked view, then reprocess.
    browser.goto(&daemon.url("/ops/hl7")).await.expect("hl7");
    seen(&browser, "tr.hl7-message .status", |t| t == "rejected").await;
    click(&browser, "tr.hl7-message button.reprocess").await;
    seen(&browser, "#notice", |t| t.contains("1 reprocessed")).await;
    shot(&browser, "5-hl7-reprocessed").await;

    // Sign out: back to the sign-in page, and the console is closed.
    click(&browser, "#sign-out").await;
    browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#sign-in"))
        .await
        .expect("sign-in form");
    browser.goto(&daemon.url("/ops")).await.expect("goto");
    browser
        .find(Locator::Css("#sign-in"))
        .await
        .expect("signed out: the sign-in form again");
    shot(&browser, "6-signed-out").await;
    browser.close().await.expect("close");
    drop(driver);
    daemon.stop().await;
}
