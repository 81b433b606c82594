//! The operators' dashboard in a real headless Chromium, driven over W3C
//! WebDriver by chromedriver, against a real `settle serve` with real
//! plugins. Nothing is mocked: the page reads and acts through the same
//! `/v1` API every client uses.
//!
//! Needs Debian's `chromium` and `chromium-driver` (tests/run.sh installs
//! them when run as root); without them the test fails and says so.

use crate::support;
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest as _;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest any one wait of this test lasts.
const PATIENCE: Duration = Duration::from_secs(30);

/// An HTTP agent that hands back 4xx/5xx answers instead of failing on
/// them (WebDriver errors and problem documents are JSON worth reading).
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Sends `body` (or nothing) and reads the JSON answer: (status, body).
fn call(agent: &ureq::Agent, method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
    call_as(agent, None, method, url, body)
}

/// [`call`] with a bearer token.
fn call_as(
    agent: &ureq::Agent,
    bearer: Option<&str>,
    method: &str,
    url: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let auth = bearer.map(|t| format!("Bearer {t}")).unwrap_or_default();
    let response = match (method, body) {
        ("GET", _) if bearer.is_some() => agent.get(url).header("Authorization", &auth).call(),
        ("GET", _) => agent.get(url).call(),
        ("DELETE", _) => agent.delete(url).call(),
        ("POST", Some(b)) if bearer.is_some() => {
            agent.post(url).header("Authorization", &auth).send_json(b)
        }
        ("POST", Some(b)) => agent.post(url).send_json(b),
        ("POST", None) => agent.post(url).send_empty(),
        _ => panic!("unsupported {method}"),
    };
    let mut response = response.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|e| panic!("{method} {url}: reading the answer: {e}"));
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// A program on the PATH, or a failure that says how to install it.
fn installed(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{program}` is not installed, and the dashboard test needs a real Chromium: \
                 install it with `sudo apt-get install -y chromium chromium-driver` \
                 (tests/run.sh, the README's test command, does this when run as root)"
            )
        })
}

/// A free port on loopback (the OS picks it; chromedriver binds it next).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Runs `probe` until it answers, for at most `limit`.
#[track_caller]
fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A child process stopped by its PID when dropped.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `settle serve` on 127.0.0.1, port 0, over a fresh store.
struct Serve {
    _child: Stopped,
    base: String,
}

impl Serve {
    /// With `tokens` (name, role, token) when there are any.
    fn start(dir: &Path, flows: &Path, tokens: &[(&str, &str, &str)]) -> Serve {
        let mut config = support::config(dir);
        for (name, role, token) in tokens {
            config.api.tokens.push(
                toml::from_str(&format!(
                    "name = '{name}'\nrole = '{role}'\nsha256 = '{}'",
                    hex::encode(sha2::Sha256::digest(token.as_bytes()))
                ))
                .expect("a token entry"),
            );
        }
        let config_file = dir.join("settle.toml");
        std::fs::write(
            &config_file,
            toml::to_string(&config).expect("config as TOML"),
        )
        .expect("write settle.toml");
        let mut child = support::settle_command()
            .arg("--config")
            .arg(&config_file)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--flows"])
            .arg(flows)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("serve.stderr")).expect("stderr file"))
            .spawn()
            .expect("start settle serve");
        let stdout = child.stdout.take().expect("stdout");
        let child = Stopped(child);
        // The first line, read on a thread so a silent host cannot hang us;
        // the rest is drained so the host never writes into a closed pipe.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_default();
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            panic!(
                "settle serve did not start (first line {line:?}); its stderr:\n{}",
                std::fs::read_to_string(dir.join("serve.stderr")).unwrap_or_default()
            );
        };
        let serve = Serve {
            _child: child,
            base: format!("http://{addr}"),
        };
        let agent = agent();
        wait_for("the host to be ready", Duration::from_secs(120), || {
            (call(&agent, "GET", &serve.url("/readyz"), None).0 == 200).then_some(())
        });
        serve
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// chromedriver on a free loopback port, and one headless Chromium session.
struct Browser {
    agent: ureq::Agent,
    session: String,
    _driver: Stopped,
    _profile: tempfile::TempDir,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    fn start(logs: &Path) -> Browser {
        let chromium = installed("chromium");
        let chromedriver = installed("chromedriver");
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(std::fs::File::create(logs.join("chromedriver.log")).expect("log file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Stopped(driver);
        let base = format!("http://127.0.0.1:{port}");
        let agent = agent();
        wait_for("chromedriver to listen", PATIENCE, || {
            agent
                .get(format!("{base}/status"))
                .call()
                .ok()
                .map(|mut r| r.body_mut().read_to_string().unwrap_or_default())
                .filter(|text| text.contains("\"ready\":true"))
        });
        let profile = support::tempdir();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-quic",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,1500",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let (status, answer) = call(
            &agent,
            "POST",
            &format!("{base}/session"),
            Some(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": chromium, "args": args},
            }}})),
        );
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver started no Chromium ({status}): {answer}"))
            .to_string();
        Browser {
            agent,
            session: format!("{base}/session/{session}"),
            _driver: driver,
            _profile: profile,
        }
    }

    /// One WebDriver command; its `value`, or a panic with the driver's error.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = call(
            &self.agent,
            method,
            &format!("{}{path}", self.session),
            body.as_ref(),
        );
        assert!(
            status == 200,
            "WebDriver {method} {path}: {status} {answer}"
        );
        answer["value"].clone()
    }

    fn open(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` in the page; what it returns.
    fn eval(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// The element `css` selects now, if any.
    fn find(&self, css: &str) -> Option<String> {
        let (status, answer) = call(
            &self.agent,
            "POST",
            &format!("{}/element", self.session),
            Some(&json!({"using": "css selector", "value": css})),
        );
        (status == 200)
            .then(|| answer["value"][ELEMENT].as_str().map(str::to_string))
            .flatten()
    }

    /// Clicks the element `css` selects, as a person would (waiting for it).
    /// A page that redrew it between the finding and the click is asked
    /// again, a few times; any other refusal fails the test.
    fn click(&self, css: &str) {
        for _ in 0..5 {
            let element = wait_for(&format!("'{css}' on the page"), PATIENCE, || self.find(css));
            let (status, answer) = call(
                &self.agent,
                "POST",
                &format!("{}/element/{element}/click", self.session),
                Some(&json!({})),
            );
            if status == 200 {
                return;
            }
            assert_eq!(
                answer["value"]["error"], "stale element reference",
                "WebDriver click on '{css}': {status} {answer}"
            );
        }
        panic!("'{css}' was redrawn under every click");
    }

    /// Types `text` into the element `css` selects.
    fn type_into(&self, css: &str, text: &str) {
        let element = wait_for(&format!("'{css}' on the page"), PATIENCE, || self.find(css));
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// A PNG of the window.
    fn screenshot(&self) -> Vec<u8> {
        let png = self.command("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("screenshot as base64"))
            .expect("screenshot is base64")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends Chromium through its driver; the driver is then stopped by PID.
        let _ = self.agent.delete(&self.session).call();
    }
}

/// Text of the page's element `css`, or "" when absent.
fn text_of(browser: &Browser, css: &str) -> String {
    let script = format!(
        "const e = document.querySelector({}); return e ? e.textContent : '';",
        json!(css)
    );
    browser
        .eval(&script)
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `quick`: two noop steps. `stuck`: one step that fails its two attempts
/// and is held (`on_exhausted: hold`); a retry (a fresh budget) passes on
/// attempt 3. `slow`: fails once, then waits 6 s to pass on attempt 2
/// (time enough for the page to find it retrying, even on a busy machine).
fn write_flows(dir: &Path) -> PathBuf {
    let flows = dir.join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::write(
        flows.join("quick.yaml"),
        "name: quick\nsteps:\n  - { name: first, plugin: noop }\n  - { name: second, plugin: noop }\n",
    )
    .unwrap();
    std::fs::write(
        flows.join("stuck.yaml"),
        "name: stuck\ndefaults:\n  on_exhausted: hold\nsteps:\n  - name: shaky\n    plugin: flaky\n    input: { mode: fail-times, times: 2 }\n    retry: { max_attempts: 2, initial_interval: 10ms, jitter: 0 }\n",
    )
    .unwrap();
    std::fs::write(
        flows.join("slow.yaml"),
        "name: slow\nsteps:\n  - name: shaky\n    plugin: flaky\n    input: { mode: fail-times, times: 1 }\n    retry: { max_attempts: 3, initial_interval: 6s, jitter: 0 }\n",
    )
    .unwrap();
    flows
}

#[test]
fn the_dashboard_shows_runs_settle_and_acts_on_a_held_run() {
    let dir = support::tempdir();
    let flows = write_flows(dir.path());
    let serve = Serve::start(dir.path(), &flows, &[]);
    let api = agent();
    let browser = Browser::start(dir.path());
    browser.open(&serve.url("/"));

    // A run of noop steps, submitted over the API, shows up settled with
    // the very phrase the API gives.
    let (code, run) = call(
        &api,
        "POST",
        &serve.url("/v1/flows/quick/runs?wait=30s"),
        Some(&json!({})),
    );
    assert_eq!(code, 200, "{run}");
    assert_eq!(run["state"], "settled", "{run}");
    let quick = run["run_id"].as_str().unwrap().to_string();
    let row = format!("tr.run[data-run='{quick}']");
    wait_for("the settled run on the page", PATIENCE, || {
        (text_of(&browser, &format!("{row}[data-state='settled'] .phrase")) == run["phrase"])
            .then_some(())
    });
    wait_for("the count of settled runs", PATIENCE, || {
        (text_of(&browser, "#counts [data-state='settled'] .count") == "1").then_some(())
    });

    // Clicked, it shows its timeline and its steps' time breakdown.
    browser.click(&row);
    wait_for("the run's timeline", PATIENCE, || {
        (!text_of(&browser, "#timeline li[data-type='run-settled']").is_empty()).then_some(())
    });
    assert_eq!(
        browser.eval("return document.querySelectorAll('#steps tr.step-row').length"),
        json!(2)
    );

    // A person's report on it is listed among open reports and in its timeline.
    let (code, answer) = call(
        &api,
        "POST",
        &serve.url(&format!("/v1/runs/{quick}/reports")),
        Some(&json!({"message": "the total looks wrong"})),
    );
    assert_eq!(code, 201, "{answer}");
    wait_for("the report among open reports", PATIENCE, || {
        text_of(&browser, &format!(".reported-run[data-run='{quick}']"))
            .starts_with("1 report(s)")
            .then_some(())
    });
    browser.click(&format!(".reported-run[data-run='{quick}'] a"));
    wait_for("the report in the run's timeline", PATIENCE, || {
        text_of(&browser, "#timeline li[data-type='user-reported']")
            .ends_with("the total looks wrong")
            .then_some(())
    });

    // A run waiting to retry is followed live: its phrase, the time left
    // before the next attempt, then its settlement as the stream sends it.
    let (code, slow) = call(
        &api,
        "POST",
        &serve.url("/v1/flows/slow/runs"),
        Some(&json!({})),
    );
    assert_eq!(code, 202, "{slow}");
    let slow = slow["run_id"].as_str().unwrap().to_string();
    browser.click(&format!("tr.run[data-run='{slow}']"));
    let countdown = wait_for("the retry's countdown, live", PATIENCE, || {
        let phrase = text_of(&browser, "#detail-phrase");
        let live = text_of(&browser, "#live");
        let left = text_of(&browser, "#timeline li[data-type='step-failed'] .countdown");
        (phrase.starts_with("Retrying shaky (attempt 2 of 3) in ") && live == "(live)")
            .then_some(left)
    });
    assert!(
        countdown.starts_with("(in ") && countdown.ends_with(" s)"),
        "time remaining shown beside the failed attempt: {countdown:?}"
    );
    wait_for("the settlement, live", PATIENCE, || {
        (!text_of(
            &browser,
            "#timeline li[data-type='run-settled'][data-via='stream']",
        )
        .is_empty()
            && text_of(&browser, "#detail-state") == "settled")
            .then_some(())
    });

    // A run that exhausts its retries is held, and listed with its actions.
    let (code, held) = call(
        &api,
        "POST",
        &serve.url("/v1/flows/stuck/runs?wait=30s"),
        Some(&json!({})),
    );
    // A held run waits (stage `waiting`, not `done`): 202.
    assert_eq!(code, 202, "{held}");
    assert_eq!(held["state"], "needs-attention", "{held}");
    let stuck = held["run_id"].as_str().unwrap().to_string();
    let card = format!(".held-run[data-run='{stuck}']");
    wait_for("the held run among held runs", PATIENCE, || {
        (text_of(&browser, &format!("{card} .phrase")) == held["phrase"]).then_some(())
    });
    // The filters: by state (a chip), by stage and by flow (the selects).
    let listed = || {
        browser.eval("return [...document.querySelectorAll('tr.run')].map(tr => tr.dataset.run)")
    };
    browser.click("#counts [data-state='needs-attention']");
    wait_for("only held runs listed", PATIENCE, || {
        (listed() == json!([stuck])).then_some(())
    });
    browser.click("#counts [data-state='needs-attention']");
    browser.click("#f-stage option[value='waiting']");
    wait_for("only waiting runs listed", PATIENCE, || {
        (listed() == json!([stuck])).then_some(())
    });
    browser.click("#f-stage option[value='']");
    browser.click("#f-flow option[value='quick']");
    wait_for("only runs of flow quick listed", PATIENCE, || {
        (listed() == json!([quick])).then_some(())
    });
    browser.click("#f-flow option[value='']");
    wait_for("every run listed again", PATIENCE, || {
        (listed().as_array().map(Vec::len) == Some(3)).then_some(())
    });

    // Follow it, then retry it from the page, with a reason.
    browser.click(&format!("{card} a"));
    wait_for("the held run's timeline", PATIENCE, || {
        (!text_of(&browser, "#timeline li[data-type='run-held']").is_empty()).then_some(())
    });
    // Held, it counts as a failure of its flow (it stopped without completing).
    wait_for("the stuck flow's failure rate", PATIENCE, || {
        (flow_row(&browser, "stuck")[4] == "100 %").then_some(())
    });
    save_screenshot(&browser, "dashboard-held.png");
    browser.type_into(&format!("{card} input.reason"), "provider fixed");
    browser.click(&format!("{card} button[data-action='retry']"));
    wait_for_flash(&browser, "retry applied");

    // The API recorded who did what and why, and the run moved on: settled.
    let run_events = || {
        let (_, log) = call(
            &api,
            "GET",
            &serve.url(&format!("/v1/runs/{stuck}/events")),
            None,
        );
        log["events"].as_array().cloned().unwrap_or_default()
    };
    let events = wait_for("the retried run to settle", PATIENCE, || {
        let events = run_events();
        events
            .iter()
            .any(|e| e["kind"]["type"] == "run-settled")
            .then_some(events)
    });
    let acted: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"]["type"] == "operator-acted")
        .collect();
    assert_eq!(acted.len(), 1, "{events:#?}");
    assert_eq!(acted[0]["kind"]["action"], "retry");
    assert_eq!(acted[0]["kind"]["reason"], "provider fixed");

    // The page follows: timeline, held list and counts.
    wait_for(
        "the operator's action and the settlement in the timeline",
        PATIENCE,
        || {
            let op = text_of(&browser, "#timeline li[data-type='operator-acted']");
            let settled = text_of(&browser, "#timeline li[data-type='run-settled']");
            (op.contains("retry — provider fixed") && !settled.is_empty()).then_some(())
        },
    );
    wait_for("the held list to empty", PATIENCE, || {
        (text_of(&browser, &card).is_empty()
            && text_of(&browser, "#counts [data-state='settled'] .count") == "3")
            .then_some(())
    });
    // The overview: the stuck flow needed a retry in its one run, and ended
    // well; the quick one did neither.
    wait_for("the flows' rates", PATIENCE, || {
        let (s, q) = (flow_row(&browser, "stuck"), flow_row(&browser, "quick"));
        // Columns: flow, runs, p50, p90, failure rate, retry rate.
        (s[1] == "1" && s[4] == "0 %" && s[5] == "100 %" && q[4] == "0 %" && q[5] == "0 %")
            .then_some(())
    });
    let (_, status) = call(&api, "GET", &serve.url(&format!("/v1/runs/{stuck}")), None);
    assert_eq!(text_of(&browser, "#detail-phrase"), status["phrase"]);

    save_screenshot(&browser, "dashboard.png");

    // How a flow converges, in the words the API gives its users.
    browser.click("a.guarantees-link[data-flow='stuck']");
    let (_, guarantees) = call(&api, "GET", &serve.url("/v1/flows/stuck/guarantees"), None);
    let first = guarantees["sentences"][1].as_str().unwrap().to_string();
    wait_for("the flow's guarantees on the page", PATIENCE, || {
        text_of(&browser, "#guarantees-list")
            .contains(&first)
            .then_some(())
    });
    assert!(first.starts_with("It goes through 1 step(s)"), "{first}");
    // The flow drawn beside it: an SVG with its step, from the API's SVG.
    wait_for("the flow's drawing on the page", PATIENCE, || {
        text_of(&browser, "#flow-graph svg")
            .contains("1. shaky")
            .then_some(())
    });
    let drawn = browser.eval("return document.querySelectorAll('#flow-graph svg rect').length");
    assert!(drawn.as_u64().unwrap_or(0) >= 4, "boxes drawn: {drawn}");

    // The settled run, restarted from its step on the page: the step runs
    // again (its two planned failures hold it once more), and the page and
    // the log both say so.
    browser.type_into("#restart-reason", "the ledger was rolled back");
    browser.click("tr.step-row[data-step='shaky'] button[data-action='restart']");
    wait_for_flash(&browser, "restart from shaky applied");
    let events = wait_for("the restarted run to be held again", PATIENCE, || {
        let events = run_events();
        (events.last().map(|e| e["kind"]["type"].clone()) == Some("run-held".into()))
            .then_some(events)
    });
    assert!(
        events.iter().any(|e| e["kind"]["type"] == "operator-acted"
            && e["kind"]["action"] == "restart"
            && e["kind"]["reason"] == "the ledger was rolled back"),
        "{events:#?}"
    );
    wait_for("the restart in the timeline", PATIENCE, || {
        let restarted = text_of(&browser, "#timeline li[data-type='run-restarted']");
        (restarted.contains("restarted from step 1")).then_some(())
    });
}

/// Waits until the page's flash message begins with `start`.
fn wait_for_flash(browser: &Browser, start: &str) {
    wait_for(&format!("the page to say '{start}'"), PATIENCE, || {
        text_of(browser, "#flash").starts_with(start).then_some(())
    });
}

/// The cells of a flow's row in the flows table: flow, runs, p50, p90,
/// failure rate, retry rate, time breakdown.
fn flow_row(browser: &Browser, flow: &str) -> Value {
    browser.eval(&format!(
        "return [...document.querySelectorAll(\"tr.flow[data-flow='{flow}'] td\")].map(td => td.textContent)"
    ))
}

/// Saves a PNG of the page in the test output directory and prints where.
fn save_screenshot(browser: &Browser, name: &str) {
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, png).expect("write the screenshot");
    println!("dashboard screenshot: {}", path.display());
}

/// With tokens, the page asks for one; the token pasted is kept for the tab
/// and sent with every request, and its role decides
/// what the page may do.
#[test]
fn the_dashboard_sends_the_pasted_token_and_its_role_decides() {
    let dir = support::tempdir();
    let flows = write_flows(dir.path());
    let serve = Serve::start(
        dir.path(),
        &flows,
        &[
            ("watcher", "viewer", "viewer-secret-0123456789"),
            ("on-call", "operator", "operator-secret-0123456789"),
        ],
    );
    let api = agent();
    let (code, held) = call_as(
        &api,
        Some("operator-secret-0123456789"),
        "POST",
        &serve.url("/v1/flows/stuck/runs?wait=30s"),
        Some(&json!({})),
    );
    assert_eq!(held["state"], "needs-attention", "{code} {held}");
    let run = held["run_id"].as_str().unwrap().to_string();
    let browser = Browser::start(dir.path());
    browser.open(&serve.url("/"));

    // Without a token nothing is listed, and the page says why.
    wait_for("the page to ask for a token", PATIENCE, || {
        text_of(&browser, "#runs")
            .contains("Cannot list runs: 401")
            .then_some(())
    });

    // A viewer's token: the held run is listed and followed, but acting
    // on it is refused.
    browser.type_into("#token", "viewer-secret-0123456789");
    browser.click("#token-save");
    let card = format!(".held-run[data-run='{run}']");
    wait_for(
        "the held run, read with the viewer's token",
        PATIENCE,
        || (text_of(&browser, &format!("{card} .phrase")) == held["phrase"]).then_some(()),
    );
    assert_eq!(
        browser.eval("return sessionStorage.getItem('settle-token')"),
        json!("viewer-secret-0123456789")
    );
    browser.click(&format!("{card} a"));
    wait_for(
        "the timeline, read with the viewer's token",
        PATIENCE,
        || (!text_of(&browser, "#timeline li[data-type='run-held']").is_empty()).then_some(()),
    );
    browser.type_into(&format!("{card} input.reason"), "try again");
    browser.click(&format!("{card} button[data-action='cancel']"));
    wait_for("the refusal", PATIENCE, || {
        text_of(&browser, "#flash")
            .starts_with("cancel refused")
            .then_some(())
    });

    // The operator's token: the same button cancels the run.
    browser.click("#token-clear");
    browser.type_into("#token", "operator-secret-0123456789");
    browser.click("#token-save");
    browser.click(&format!("{card} button[data-action='cancel']"));
    wait_for("the cancellation", PATIENCE, || {
        text_of(&browser, "#flash")
            .starts_with("cancel applied")
            .then_some(())
    });
    let (_, log) = call_as(
        &api,
        Some("viewer-secret-0123456789"),
        "GET",
        &serve.url(&format!("/v1/runs/{run}/events")),
        None,
    );
    let kinds: Vec<&Value> = log["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| &e["kind"])
        .collect();
    let acted: Vec<&&Value> = kinds
        .iter()
        .filter(|k| k["type"] == "operator-acted")
        .collect();
    assert_eq!(
        acted.len(),
        1,
        "only the operator's action is recorded: {kinds:#?}"
    );
    assert_eq!(acted[0]["action"], "cancel");
    assert_eq!(acted[0]["by"], "token:on-call");
    assert_eq!(acted[0]["reason"], "try again");
    assert_eq!(
        kinds.last().map(|k| &k["type"]),
        Some(&json!("run-cancelled"))
    );
}

/// A run waiting at an approval step and one waiting for a signal show
/// what they wait for, with buttons: approving (as the page's caller) and
/// sending the signal's payload move them on, and they settle.
#[test]
fn the_dashboard_decides_approvals_and_sends_signals() {
    let dir = support::tempdir();
    let flows = write_flows(dir.path());
    std::fs::write(
        flows.join("gated.yaml"),
        "name: gated\nsteps:\n  - name: finance\n    approval: { approvers: [local], roles: [operator], timeout: 1h }\n  - { name: ship, plugin: noop }\n",
    )
    .unwrap();
    std::fs::write(
        flows.join("paid.yaml"),
        "name: paid\nsteps:\n  - name: payment\n    signal: { name: paid, timeout: 1h, schema: { type: object, required: [by] } }\n  - { name: ship, plugin: noop }\n",
    )
    .unwrap();
    let serve = Serve::start(dir.path(), &flows, &[]);
    let api = agent();
    let browser = Browser::start(dir.path());
    browser.open(&serve.url("/"));

    let submit = |flow: &str| {
        let (code, run) = call(
            &api,
            "POST",
            &serve.url(&format!("/v1/flows/{flow}/runs")),
            Some(&json!({})),
        );
        assert_eq!(code, 202, "{run}");
        run["run_id"].as_str().unwrap().to_string()
    };
    let settled = |run: &str| {
        wait_for("the run settled", PATIENCE, || {
            let (_, status) = call(&api, "GET", &serve.url(&format!("/v1/runs/{run}")), None);
            (status["state"] == "settled").then_some(status)
        })
    };

    // The approval: "0 of 1 given", then approved from the page.
    let gated = submit("gated");
    browser.click(&format!("tr.run[data-run='{gated}']"));
    wait_for("the approval the run waits for", PATIENCE, || {
        text_of(&browser, "#awaiting-what")
            .starts_with("Waiting for approval at step finance: 0 of 1 given")
            .then_some(())
    });
    browser.type_into("#approval-comment", "looks right");
    browser.click("#approve");
    wait_for_flash(&browser, "approve recorded for step finance");
    let status = settled(&gated);
    assert!(status.get("awaiting").is_none(), "{status}");
    let (_, events) = call(
        &api,
        "GET",
        &serve.url(&format!("/v1/runs/{gated}/events")),
        None,
    );
    let decision = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"]["type"] == "signal-received")
        .map(|e| e["kind"].clone())
        .unwrap_or_default();
    assert_eq!(decision["payload"]["decision"], "approve", "{events}");
    assert_eq!(decision["payload"]["comment"], "looks right", "{events}");

    // The signal: a payload the schema refuses is refused on the page; a
    // good one moves the run on.
    let paid = submit("paid");
    browser.click(&format!("tr.run[data-run='{paid}']"));
    wait_for("the signal the run waits for", PATIENCE, || {
        text_of(&browser, "#awaiting-what")
            .starts_with("Waiting for signal 'paid' at step payment")
            .then_some(())
    });
    browser.type_into("#signal-payload", r#"{"amount": 3}"#);
    browser.click("#send-signal");
    wait_for_flash(&browser, "signal 'paid' refused");
    browser.eval("document.getElementById('signal-payload').value = ''; return null");
    browser.type_into("#signal-payload", r#"{"by": "psp"}"#);
    browser.click("#send-signal");
    wait_for_flash(&browser, "signal 'paid' sent");
    let status = settled(&paid);
    assert_eq!(status["state"], "settled", "{status}");
    save_screenshot(&browser, "dashboard-awaiting.png");
}
