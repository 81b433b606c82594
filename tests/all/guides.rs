//! The guides' samples are built and run: every `yaml` block of
//! `host/flow/GUIDE.md` validates against the installed example plugins,
//! and each one with a `# dry run:` line completes under `settle flow test`;
//! every plugin of `plugin-sdk/GUIDE.md` builds and runs in the host.

use crate::support;
use std::path::Path;

/// The fenced blocks of `lang` in `text`, in order.
fn blocks<'t>(text: &'t str, lang: &str) -> Vec<&'t str> {
    let fence = format!("```{lang}\n");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let Some(end) = body.find("\n```") else { break };
        out.push(&body[..end]);
        rest = &body[end..];
    }
    out
}

#[test]
fn every_flow_of_the_flow_guide_validates_and_its_dry_runs_complete() {
    let guide = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../host/flow/GUIDE.md"),
    )
    .unwrap();
    let flows = blocks(&guide, "yaml");
    assert!(flows.len() >= 6, "the guide has {} flows", flows.len());
    let dir = support::tempdir();
    let config = support::write_config(dir.path(), None);
    let config = config.to_str().unwrap();
    let mut dry_runs = 0;
    for (i, flow) in flows.iter().enumerate() {
        let file = dir.path().join(format!("guide-{i}.yaml"));
        std::fs::write(&file, flow).unwrap();
        let file = file.to_str().unwrap();
        let (code, out, err) =
            support::settle(&["--config", config, "flow", "validate", file]).unwrap();
        assert_eq!(code, 0, "sample {i} of the guide:\n{flow}\n{out}{err}");
        let Some(args) = flow
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# dry run: "))
        else {
            continue;
        };
        let mut command = vec!["--config", config, "flow", "test", file];
        command.extend(args.split_whitespace());
        let (code, out, err) = support::settle(&command).unwrap();
        assert_eq!(code, 0, "dry run of sample {i}:\n{flow}\n{out}{err}");
        assert!(out.contains("every step completed or was skipped"), "{out}");
        dry_runs += 1;
    }
    assert!(dry_runs >= 4, "{dry_runs} dry runs");
}

/// The files of `plugin-sdk/GUIDE.md`: each `<!-- file: PROJECT/PATH -->`
/// followed by a fenced block, as (project, path, text).
fn guide_files(guide: &str) -> Vec<(String, String, String)> {
    let marker = "<!-- file: ";
    let mut out = Vec::new();
    let mut rest = guide;
    while let Some(at) = rest.find(marker) {
        let after = &rest[at + marker.len()..];
        let end = after.find(" -->").expect("a closed file marker");
        let (project, path) = after[..end].split_once('/').expect("PROJECT/PATH");
        let body = &after[end..];
        let open = body.find("```").expect("a block after the marker");
        let body = &body[open..];
        let start = body.find('\n').expect("a fence line") + 1;
        let close = body[start..].find("\n```").expect("a closed block");
        out.push((
            project.to_string(),
            path.to_string(),
            format!("{}\n", &body[start..start + close]),
        ));
        rest = &body[start + close..];
    }
    out
}

/// Every plugin of the plugin guide: written over a project `settle plugin
/// new` made, built, and run in the host's runtime (the Rust one by its own
/// tests through the SDK's harness; the Python and JavaScript ones through
/// `settle plugin session`).
#[test]
fn every_plugin_of_the_plugin_guide_builds_and_runs_in_the_host() {
    let guide = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugin-sdk/GUIDE.md"),
    )
    .unwrap();
    let files = guide_files(&guide);
    // No sample escapes: every code block is a file the test builds.
    assert_eq!(
        guide.matches("\n```rust").count()
            + guide.matches("\n```python").count()
            + guide.matches("\n```javascript").count(),
        files.len(),
        "a code block without a file marker"
    );
    let projects: Vec<&str> = files.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(projects, ["payout", "seats-py", "seats-js"], "{projects:?}");
    let dir = support::tempdir();
    let tools = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| std::path::PathBuf::from(t).join("../plugin-tools"))
        .unwrap_or_else(|| dir.path().join("plugin-tools"));
    for (project, path, text) in &files {
        let lang = match project.as_str() {
            "payout" => "rust",
            p if p.ends_with("-py") => "python",
            _ => "js",
        };
        let (code, out, err) = support::settle(&[
            "plugin",
            "new",
            project,
            "--lang",
            lang,
            "--dir",
            dir.path().to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(code, 0, "{out}{err}");
        let root = dir.path().join(project);
        std::fs::write(root.join(path), text).unwrap();
        if lang == "rust" {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(|t| std::path::PathBuf::from(t).join("settle-plugin-new"))
                .unwrap_or_else(|| dir.path().join("target"));
            let mut test = std::process::Command::new(
                std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
            );
            test.args(["test", "--quiet"])
                .current_dir(&root)
                .env("CARGO_TARGET_DIR", &target)
                .env("SETTLE", support::settle_bin());
            let (code, out, err) =
                support::output_within(&mut test, std::time::Duration::from_secs(900));
            assert_eq!(code, 0, "cargo test of {project}:\n{out}\n{err}");
            assert!(out.contains("test result: ok. 3 passed"), "{out}");
            continue;
        }
        // The project's own test of its logic, as its README says.
        let mut unit = match lang {
            "python" => std::process::Command::new("python3"),
            _ => std::process::Command::new("node"),
        };
        match lang {
            "python" => unit.args(["-m", "unittest"]),
            _ => unit.args(["--test", "logic.test.js"]),
        };
        unit.current_dir(&root);
        let (code, out, err) =
            support::output_within(&mut unit, std::time::Duration::from_secs(120));
        assert_eq!(code, 0, "{lang} test of {project}:\n{out}\n{err}");
        let mut build = std::process::Command::new(root.join("build.sh"));
        build.env("SETTLE_PLUGIN_TOOLS", &tools);
        let (code, out, err) =
            support::output_within(&mut build, std::time::Duration::from_secs(600));
        assert_eq!(code, 0, "build of {project}:\n{out}\n{err}");
        seats_hold_in_the_host(&root.join(format!("{project}.wasm")));
    }
}

/// The seats plugin of the guide, in a session: holds up to its capacity,
/// once per step, releases when undone, and sees a hold that is gone.
fn seats_hold_in_the_host(wasm: &Path) {
    use std::io::Write;
    let commands = [
        r#"{"call":"run","input":{"seats":2},"step_id":"s1"}"#,
        r#"{"call":"run","input":{"seats":2},"step_id":"s1","attempt":2}"#,
        r#"{"call":"run","input":{"seats":2},"step_id":"s2"}"#,
        r#"{"call":"compensate","input":{"seats":2},"step_id":"s1"}"#,
        r#"{"call":"run","input":{"seats":2},"step_id":"s2"}"#,
        r#"{"call":"reconcile","input":{"seats":2},"output":{"hold":"hold/s1","seats":2},"step_id":"s1"}"#,
    ];
    let script = wasm.with_extension("commands");
    let mut file = std::fs::File::create(&script).unwrap();
    for c in commands {
        writeln!(file, "{c}").unwrap();
    }
    drop(file);
    let mut session = support::settle_command();
    session
        .args(["plugin", "session"])
        .arg(wasm)
        .args(["--kv", "--config-value", "capacity=3"])
        .stdin(std::fs::File::open(&script).unwrap());
    let (code, out, err) =
        support::output_within(&mut session, std::time::Duration::from_secs(120));
    assert_eq!(code, 0, "{out}{err}");
    let mut lines = out.lines();
    assert!(
        lines.next().unwrap_or_default().starts_with("{\"ready\""),
        "{out}"
    );
    let answers: Vec<serde_json::Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    let shown = format!("{}: {answers:#?}", wasm.display());
    assert_eq!(answers.len(), commands.len(), "{shown}");
    assert_eq!(
        answers[0]["output"],
        serde_json::json!({"hold": "hold/s1", "seats": 2}),
        "{shown}"
    );
    assert_eq!(answers[0]["logs"][0]["message"], "held 2 seats", "{shown}");
    assert_eq!(
        answers[1]["output"], answers[0]["output"],
        "held once: {shown}"
    );
    assert!(answers[1]["logs"].as_array().unwrap().is_empty(), "{shown}");
    assert_eq!(answers[2]["class"], "permanent", "{shown}");
    assert_eq!(answers[2]["message"], "only 1 seats left", "{shown}");
    assert_eq!(answers[3]["outcome"], "ok", "{shown}");
    assert_eq!(answers[4]["outcome"], "ok", "released, so s2 fits: {shown}");
    assert_eq!(
        answers[5]["verdict"]["drifted"], "the hold is gone",
        "{shown}"
    );
}

/// The operating guide: its configuration, its flow, and each `$` line of
/// its session run in a fresh directory with the example plugins; a `>`
/// line is text the command before must print.
#[test]
fn the_operating_guide_session_runs_as_written() {
    let guide = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../host/cli/GUIDE.md"),
    )
    .unwrap();
    let dir = support::tempdir();
    let root = dir.path();
    let toml = blocks(&guide, "toml");
    assert_eq!(toml.len(), 1, "one configuration");
    std::fs::write(root.join("settle.toml"), toml[0]).unwrap();
    std::fs::create_dir_all(root.join("plugins")).unwrap();
    for plugin in ["noop", "flaky"] {
        std::fs::copy(
            support::plugin_dir().join(format!("{plugin}.wasm")),
            root.join(format!("plugins/{plugin}.wasm")),
        )
        .unwrap();
    }
    for (dir, path, text) in guide_files(&guide) {
        let file = root.join(dir).join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }
    let session = blocks(&guide, "console");
    assert_eq!(session.len(), 1, "one session");
    // `settle` is the binary under test.
    let bin_dir = Path::new(support::settle_bin()).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut ran = 0;
    let mut last = String::new();
    for line in session[0].lines() {
        if let Some(command) = line.strip_prefix("$ ") {
            let mut shell = std::process::Command::new("bash");
            shell
                .args(["-c", command])
                .current_dir(root)
                .env("PATH", &path);
            let (code, out, err) =
                support::output_within(&mut shell, std::time::Duration::from_secs(120));
            assert_eq!(code, 0, "`{command}`:\n{out}\n{err}");
            last = out;
            ran += 1;
        } else if let Some(expected) = line.strip_prefix("> ") {
            assert!(last.contains(expected), "expected {expected:?} in:\n{last}");
        }
    }
    assert!(ran >= 5, "{ran} commands");
}
