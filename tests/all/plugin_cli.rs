//! `settle plugin check FILE.wasm`: a component this host can run is
//! described (contract version, imports, manifest); anything else is
//! refused with a one-line reason that names the file and the problem.

use crate::support;

fn check(file: &std::path::Path) -> (i32, String, String) {
    support::settle(&["plugin", "check", file.to_str().unwrap()]).unwrap()
}

#[test]
fn a_plugin_is_described_and_anything_else_refused_with_the_reason() {
    let dist = support::plugin_dir();
    let (code, out, err) = check(&dist.join("transfer.wasm"));
    assert_eq!(code, 0, "{err}");
    let contract = settle::runtime::contract_version();
    for expected in [
        format!("plugin transfer 1.0.0 implements settle:plugin/handler@{contract}"),
        "compensates: yes · reconciles: yes".to_string(),
        "wasi:http/outgoing-handler".to_string(),
        "[plugins.transfer] allowed_outbound_hosts".to_string(),
    ] {
        assert!(out.contains(&expected), "missing {expected:?} in:\n{out}");
    }
    // Its describe() answers with a forged version: named, not installed.
    let hostile = dist.join("../dist-hostile/bad-version.wasm");
    let (code, _, err) = check(&hostile);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("not a plugin this host can run: ") && err.contains("bad-version.wasm"),
        "{err}"
    );
    // Not WebAssembly at all.
    let dir = support::tempdir();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "hello").unwrap();
    let (code, _, err) = check(&text);
    assert_eq!(code, 1);
    assert!(
        err.contains("notes.wasm") && err.contains("not a valid WebAssembly component"),
        "{err}"
    );
    let (code, out, _) = support::settle(&[
        "plugin",
        "check",
        "--json",
        dist.join("noop.wasm").to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["name"], "noop");
    assert_eq!(json["contract"], contract);
}

#[test]
fn the_sdk_carries_the_contract_of_the_repository() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    assert_eq!(
        read("plugin-sdk/wit/plugin.wit"),
        read("wit/plugin.wit"),
        "plugin-sdk/wit/plugin.wit is a copy of wit/plugin.wit: copy it again"
    );
    // The SDK a new plugin gets depends on what plugin-sdk does.
    let sdk = read("plugin-sdk/Cargo.toml");
    for dependency in ["wit-bindgen = \"0.63\"", "wasi = \"0.14\""] {
        assert!(
            sdk.contains(dependency),
            "plugin-sdk/Cargo.toml changed: update plugin_new.rs ({dependency})"
        );
    }
}

/// `settle plugin new` makes a project outside this repository that tests,
/// builds, passes `settle plugin check` and settles a run on the host.
#[test]
fn a_new_plugin_builds_outside_the_repository_and_runs_on_the_host() {
    let dir = support::tempdir();
    let (code, out, err) = support::settle(&[
        "plugin",
        "new",
        "greeter",
        "--dir",
        dir.path().to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let project = dir.path().join("greeter");
    assert!(project.join("settle-sdk/wit/plugin.wit").is_file());
    // Its own target directory, kept between test runs when there is a
    // shared one, so its dependencies are built once.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| std::path::PathBuf::from(t).join("settle-plugin-new"))
        .unwrap_or_else(|| dir.path().join("target"));
    let cargo = |args: &[&str]| {
        let mut command =
            std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()));
        command
            .args(args)
            .current_dir(&project)
            .env("CARGO_TARGET_DIR", &target)
            .env("SETTLE", support::settle_bin());
        let (code, out, err) =
            support::output_within(&mut command, std::time::Duration::from_secs(600));
        assert_eq!(code, 0, "cargo {args:?}:\n{out}\n{err}");
        out
    };
    let tested = cargo(&["test", "--quiet"]);
    assert!(tested.contains("2 passed"), "{tested}");
    cargo(&["build", "--quiet", "--release", "--target", "wasm32-wasip2"]);
    let wasm = target.join("wasm32-wasip2/release/greeter.wasm");
    let (code, out, err) = support::settle(&["plugin", "check", wasm.to_str().unwrap()]).unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("plugin greeter 0.1.0 implements"), "{out}");

    // Installed beside the example plugins, it settles a run.
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(&wasm, plugins.join("greeter.wasm")).unwrap();
    let mut config = support::config(dir.path());
    config.plugin_dirs = vec![plugins];
    let config_path = dir.path().join("settle.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
    let flow = dir.path().join("greet.yaml");
    std::fs::write(
        &flow,
        "name: greet\nsteps:\n  - name: hello\n    plugin: greeter\n    compensate: false\n    input: { name: \"${{ input.name }}\" }\n",
    )
    .unwrap();
    let (code, out, err) = support::settle(&[
        "--config",
        config_path.to_str().unwrap(),
        "run",
        flow.to_str().unwrap(),
        "--input",
        r#"{"name": "Ada"}"#,
        "--quiet",
    ])
    .unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("Hello, Ada!"), "{out}");
}

/// `settle plugin new --lang python|js`: a project that tests its logic
/// natively, builds with the pinned tool and runs on the host.
#[test]
fn new_python_and_js_plugins_test_build_and_settle_a_run() {
    let dir = support::tempdir();
    // The tools build-other-languages.sh installed for this test run.
    let tools = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| std::path::PathBuf::from(t).join("../plugin-tools"))
        .unwrap_or_else(|| dir.path().join("plugin-tools"));
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for (lang, name, test) in [
        ("python", "py-greeter", ["python3", "-m", "unittest"]),
        ("js", "js-greeter", ["node", "--test", "logic.test.js"]),
    ] {
        let (code, out, err) = support::settle(&[
            "plugin",
            "new",
            name,
            "--lang",
            lang,
            "--dir",
            dir.path().to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(code, 0, "{out}{err}");
        let project = dir.path().join(name);
        assert!(project.join("wit/plugin.wit").is_file());
        let mut command = std::process::Command::new(test[0]);
        command.args(&test[1..]).current_dir(&project);
        let (code, out, err) =
            support::output_within(&mut command, std::time::Duration::from_secs(120));
        assert_eq!(code, 0, "{lang} test:\n{out}\n{err}");
        let mut build = std::process::Command::new(project.join("build.sh"));
        build.env("SETTLE_PLUGIN_TOOLS", &tools);
        let (code, out, err) =
            support::output_within(&mut build, std::time::Duration::from_secs(600));
        assert_eq!(code, 0, "{lang} build:\n{out}\n{err}");
        let wasm = project.join(format!("{name}.wasm"));
        let (code, out, err) =
            support::settle(&["plugin", "check", wasm.to_str().unwrap()]).unwrap();
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains(&format!("plugin {name} 0.1.0 implements")),
            "{out}"
        );
        std::fs::copy(&wasm, plugins.join(format!("{name}.wasm"))).unwrap();
    }
    let mut config = support::config(dir.path());
    config.plugin_dirs = vec![plugins];
    let config_path = dir.path().join("settle.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
    let flow = dir.path().join("greet.yaml");
    std::fs::write(
        &flow,
        "name: greet\nsteps:\n  - { name: py, plugin: py-greeter, compensate: false, input: { name: \"${{ input.name }}\" } }\n  - { name: js, plugin: js-greeter, compensate: false, input: { name: \"${{ steps.py.output.greeting }}\" } }\n",
    )
    .unwrap();
    let (code, out, err) = support::settle(&[
        "--config",
        config_path.to_str().unwrap(),
        "run",
        flow.to_str().unwrap(),
        "--input",
        r#"{"name": "Ada"}"#,
        "--quiet",
    ])
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Hello, Hello, Ada!!"), "{out}");
}

/// `settle plugin install`: checks the file, says what it asks to be
/// granted, wants a confirmation, copies it in as NAME.wasm, refuses to put
/// another build in place of an installed one unless told, and grants
/// nothing itself.
#[test]
fn install_checks_shows_what_it_asks_confirms_and_copies() {
    let dir = support::tempdir();
    let plugins = dir.path().join("plugins");
    let other = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../example-plugins/dist-other/py-ledger.wasm");
    let install = |args: &[&str]| {
        let mut all = vec!["plugin", "install"];
        all.extend(args);
        support::settle(&all).unwrap()
    };
    let (code, _, err) = install(&[other.to_str().unwrap(), "--dir", plugins.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("confirm with --yes"), "{err}");
    assert!(!plugins.join("py-ledger.wasm").exists());

    let (code, out, err) = install(&[
        other.to_str().unwrap(),
        "--yes",
        "--dir",
        plugins.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("it may keep durable key-value state"), "{out}");
    assert!(out.contains("kv = true"), "{out}");
    assert!(out.contains("nothing is granted by installing"), "{out}");
    assert_eq!(
        std::fs::read(plugins.join("py-ledger.wasm")).unwrap(),
        std::fs::read(&other).unwrap()
    );
    let (code, out, _) = install(&[
        other.to_str().unwrap(),
        "--yes",
        "--dir",
        plugins.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("already installed"), "{out}");

    // Another build that calls itself noop, where noop is installed.
    std::fs::copy(
        support::plugin_dir().join("noop.wasm"),
        plugins.join("noop.wasm"),
    )
    .unwrap();
    let squat = support::plugin_dir().join("../dist-hostile/squat-noop.wasm");
    let (code, _, err) = install(&[
        squat.to_str().unwrap(),
        "--yes",
        "--dir",
        plugins.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("--replace"), "{err}");
    let (code, out, err) = install(&[
        squat.to_str().unwrap(),
        "--yes",
        "--replace",
        "--dir",
        plugins.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        std::fs::read(plugins.join("noop.wasm")).unwrap(),
        std::fs::read(&squat).unwrap()
    );

    // Not a plugin: nothing is copied.
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let (code, _, err) = install(&[
        junk.to_str().unwrap(),
        "--yes",
        "--dir",
        plugins.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("not installed: not a plugin"), "{err}");
    assert!(!plugins.join("junk.wasm").exists());
}

/// `settle plugin remove NAME`: refused, with their count, while
/// unfinished runs call the plugin; otherwise its file goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_is_refused_while_unfinished_runs_call_the_plugin() {
    let dir = support::tempdir();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for p in ["noop", "flaky"] {
        std::fs::copy(
            support::plugin_dir().join(format!("{p}.wasm")),
            plugins.join(format!("{p}.wasm")),
        )
        .unwrap();
    }
    let mut config = support::config(dir.path());
    config.plugin_dirs = vec![plugins.clone()];
    let config_path = dir.path().join("settle.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
    {
        let host = settle::app::Host::start(&config).await.unwrap();
        host.engine.set_paused(true);
        let flow = support::flow("name: one\nsteps:\n  - { name: a, plugin: noop }\n");
        support::submit(&host, &flow, serde_json::json!({})).await;
        host.shutdown().await.unwrap();
    }
    let remove = |name: &str| {
        support::settle(&[
            "--config",
            config_path.to_str().unwrap(),
            "plugin",
            "remove",
            name,
        ])
        .unwrap()
    };
    let (code, out, err) = remove("noop");
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("plugin 'noop' is still called by 1 unfinished run(s)"),
        "{err}"
    );
    assert!(plugins.join("noop.wasm").is_file(), "nothing removed");
    let (code, out, err) = remove("flaky");
    assert_eq!(code, 0, "{out}{err}");
    assert!(!plugins.join("flaky.wasm").exists());
    let (code, _, err) = remove("flaky");
    assert_ne!(code, 0);
    assert!(err.contains("no plugin 'flaky' is installed"), "{err}");
}
