//! Statuses speak the language the client asks for (`Accept-Language`),
//! from the versioned message catalog; the run records the catalog
//! version, and the message id and parameters travel with the phrase.

use crate::support;
use serde_json::json;

const QUICK: &str = "
name: quick
steps:
  - { name: one, plugin: noop }
";

const HELD: &str = "
name: held
defaults:
  on_exhausted: hold
steps:
  - { name: broken, plugin: flaky, input: { mode: fail-times, times: 99 }, retry: { max_attempts: 1 } }
";

#[test]
fn statuses_are_rendered_in_the_language_asked_for() {
    let dir = support::tempdir();
    let server = support::Server::start(dir.path(), &[("quick", QUICK), ("held", HELD)], "");

    // German asked for: German phrase, marked as such.
    let reply = server
        .call("POST", "/v1/flows/quick/runs?wait=10s")
        .header("Accept-Language", "de-DE,de;q=0.9,en;q=0.8")
        .json(&json!({}))
        .send();
    assert_eq!(reply.status, 200, "{reply}");
    assert_eq!(reply.json["state"], "settled");
    let id = reply.json["message"]["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("run.settled"), "{reply}");
    assert!(
        reply.json["phrase"]
            .as_str()
            .unwrap()
            .starts_with("Abgeschlossen"),
        "{reply}"
    );
    assert_eq!(reply.json["language"], "de");
    assert_eq!(reply.json["catalog"], 1, "the run records its catalog");
    assert_eq!(reply.header("content-language"), Some("de"));
    assert!(
        reply
            .header("vary")
            .is_some_and(|v| v.to_ascii_lowercase().contains("accept-language")),
        "{:?}",
        reply.headers
    );
    let run = reply.json["run_id"].as_str().unwrap().to_string();

    // No header: English, same message.
    let english = server.get(&format!("/v1/runs/{run}"));
    assert_eq!(english.json["language"], "en");
    assert_eq!(english.json["message"]["id"], id.as_str());
    assert!(
        english.json["phrase"]
            .as_str()
            .unwrap()
            .starts_with("Completed"),
        "{english}"
    );
    // A language the catalog lacks falls back to the best one it has.
    let listed = server
        .call("GET", "/v1/runs?limit=5")
        .header("Accept-Language", "fr-FR, de;q=0.5")
        .send();
    assert_eq!(listed.header("content-language"), Some("de"));
    assert!(
        listed.json["runs"][0]["phrase"]
            .as_str()
            .unwrap()
            .starts_with("Abgeschlossen"),
        "{listed}"
    );

    // Words from outside the catalog (a hold reason) pass through as written.
    let held = server
        .call("POST", "/v1/flows/held/runs?wait=10s")
        .header("Accept-Language", "de")
        .json(&json!({}))
        .send();
    assert_eq!(held.json["state"], "needs-attention", "{held}");
    assert_eq!(held.json["message"]["id"], "run.held");
    let phrase = held.json["phrase"].as_str().unwrap();
    assert!(
        phrase.starts_with("Angehalten: ein Operator muss handeln: ")
            && phrase.contains("planned failure 1 of 99"),
        "{phrase}"
    );
}
