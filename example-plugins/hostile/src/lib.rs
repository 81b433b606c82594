//! `hostile`: a plugin that attacks its host on demand, for the sandbox tests.
//!
//! Every behaviour goes through `wit/` by way of settle-sdk, exactly as a
//! real plugin would. Modes of `run` (`mode` in the input):
//! - `ok`: succeeds.
//! - `kv-flood`: calls `kv.get` with a key of `key_kib` KiB (default 1024) in
//!   a loop until the host stops it.
//! - `kv-fill`: sets `count` keys (`prefix` + index) of `value_bytes` bytes;
//!   returns how many were accepted and the first error.
//! - `kv-write-then-fail`: sets `key`, then fails permanently.
//! - `kv-read`: returns the value of `key` (as text), or null.
//! - `log-flood`: logs `size_kib` KiB messages in a loop until stopped.
//! - `log-forge`: logs one message holding a newline, a forged host `ERROR`
//!   line and ANSI escapes; then succeeds.
//! - `progress-flood`: reports progress with 1 MiB messages in a loop until stopped.
//! - `deny-flood`: makes `count` refused `kv.get` calls (distinct keys), then succeeds.
//! - `config-missing`: reads setting `key`, which the operator did not set.
//! - `fs`: tries to read, list and write files; reports what happened.
//! - `env`: reports the environment variables and arguments it sees.
//! - `socket`: tries a TCP connection to `addr` and a UDP bind; reports what happened.
//! - `http`: GETs `url`, following up to 5 redirects itself when `follow` is
//!   true; reports the status or the error of every hop.
//! - `sleep`: sleeps `ms` milliseconds (waiting, not computing).
//!
//! Features build variants whose `describe` misbehaves (see Cargo.toml).

use serde_json::{Value, json};
use settle_sdk::{Ctx, Manifest, Step, StepError};

struct Hostile;

fn text(input: &Value, key: &str, default: &str) -> String {
    input
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or(default)
        .to_string()
}

fn number(input: &Value, key: &str, default: u64) -> u64 {
    input.get(key).and_then(Value::as_u64).unwrap_or(default)
}

/// The name `describe` gives: a variant may claim another plugin's name.
fn name() -> String {
    if cfg!(feature = "squat-noop") {
        "noop".into()
    } else if cfg!(feature = "huge-name") {
        "h".repeat(8 << 20)
    } else {
        "hostile".into()
    }
}

fn version() -> String {
    if cfg!(feature = "huge-version") {
        "1".repeat(1 << 20)
    } else if cfg!(feature = "bad-version") {
        "1.0.0\n\u{1b}[31mERROR forged".into()
    } else {
        "1.0.0".into()
    }
}

fn summary() -> String {
    if cfg!(feature = "huge-summary") {
        "s".repeat(1 << 20)
    } else {
        "Attacks its host on demand (sandbox tests)".into()
    }
}

fn input_schema() -> Value {
    if cfg!(feature = "huge-schema") {
        let properties: serde_json::Map<String, Value> = (0..20_000)
            .map(|i| (format!("property-{i:08}"), json!({"type": "string"})))
            .collect();
        json!({"type": "object", "properties": properties})
    } else if cfg!(feature = "deep-schema") {
        let mut schema = json!({"type": "object"});
        for _ in 0..100 {
            schema = json!({"type": "object", "properties": {"a": schema}});
        }
        schema
    } else {
        json!({"type": "object", "properties": {"mode": {"type": "string"}}})
    }
}

/// What `describe` does before answering, in the misbehaving variants.
fn misbehave_in_describe() {
    if cfg!(feature = "describe-sleep") {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
    if cfg!(feature = "describe-loop") {
        let mut x: u64 = 0;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
    if cfg!(feature = "describe-trap") {
        panic!("planned trap in describe");
    }
    if cfg!(feature = "describe-oom") {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

impl Step for Hostile {
    type Input = Value;
    type Output = Value;

    fn manifest() -> Manifest {
        misbehave_in_describe();
        let mut m = Manifest::new(&name(), &version(), &summary()).input_schema(input_schema());
        m.output_schema = json!({});
        m
    }

    fn run(ctx: &Ctx, input: Value) -> Result<Value, StepError> {
        let mode = text(&input, "mode", "ok");
        match mode.as_str() {
            "ok" => Ok(json!({"attempt": ctx.attempt})),
            "kv-flood" => {
                let key = "k".repeat(number(&input, "key_kib", 1024) as usize * 1024);
                loop {
                    let _ = std::hint::black_box(settle_sdk::kv::get(&key));
                }
            }
            "kv-fill" => kv_fill(&input),
            "kv-write-then-fail" => {
                settle_sdk::kv::set(&text(&input, "key", "left-behind"), b"written")?;
                Err(StepError::permanent("planned failure after a kv write"))
            }
            "kv-read" => {
                let value = settle_sdk::kv::get(&text(&input, "key", "left-behind"))?;
                Ok(json!({"value": value.map(|v| String::from_utf8_lossy(&v).into_owned())}))
            }
            "log-flood" => {
                let line = "l".repeat(number(&input, "size_kib", 64) as usize * 1024);
                loop {
                    settle_sdk::log::info(&line);
                }
            }
            "log-forge" => {
                settle_sdk::log::info(
                    "innocent\n2026-11-28T10:00:00.000000Z ERROR settle::engine: forged host line \u{1b}[31mred\u{1b}[0m\r\u{7}",
                );
                Ok(json!({"logged": true}))
            }
            "progress-flood" => {
                let message = "p".repeat(1 << 20);
                let mut i: u64 = 0;
                loop {
                    i = i.wrapping_add(1);
                    settle_sdk::progress((i % 100) as f32 / 100.0, &message);
                }
            }
            "deny-flood" => {
                let count = number(&input, "count", 1000);
                let refused = (0..count)
                    .filter(|i| settle_sdk::kv::get(&format!("key-{i}")).is_err())
                    .count();
                Ok(json!({"refused": refused}))
            }
            "config-missing" => {
                let key = text(&input, "key", "api_token");
                settle_sdk::config::require(&key).map(|v| json!({"value": v}))
            }
            "fs" => Ok(file_system()),
            "env" => Ok(json!({
                "vars": std::env::vars().map(|(k, _)| k).collect::<Vec<_>>(),
                "args": std::env::args().collect::<Vec<_>>(),
                "cwd": std::env::current_dir().ok().map(|d| d.display().to_string()),
            })),
            "socket" => Ok(sockets(&text(&input, "addr", "127.0.0.1:9"))),
            "http" => Ok(raw_http::get_following(
                &text(&input, "url", "http://127.0.0.1:9/"),
                input
                    .get("follow")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            )),
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_millis(number(&input, "ms", 1000)));
                Ok(json!({"slept": true}))
            }
            other => Err(StepError::invalid_input(format!("unknown mode '{other}'"))),
        }
    }
}

fn kv_fill(input: &Value) -> Result<Value, StepError> {
    let prefix = text(input, "prefix", "fill-");
    let value = vec![b'v'; number(input, "value_bytes", 1024) as usize];
    let mut accepted = 0u64;
    let mut error = None;
    for i in 0..number(input, "count", 10) {
        match settle_sdk::kv::set(&format!("{prefix}{i}"), &value) {
            Ok(()) => accepted += 1,
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    Ok(json!({"accepted": accepted, "error": error}))
}

fn outcome<T>(result: std::io::Result<T>) -> Value {
    match result {
        Ok(_) => json!("allowed"),
        Err(e) => json!(format!("refused: {e}")),
    }
}

fn file_system() -> Value {
    json!({
        "read /etc/passwd": outcome(std::fs::read("/etc/passwd")),
        "read relative Cargo.toml": outcome(std::fs::read("Cargo.toml")),
        "list /": outcome(std::fs::read_dir("/")),
        "list .": outcome(std::fs::read_dir(".")),
        "write /tmp/settle-hostile": outcome(std::fs::write("/tmp/settle-hostile", b"x")),
        "write ./settle-hostile": outcome(std::fs::write("settle-hostile", b"x")),
    })
}

fn sockets(addr: &str) -> Value {
    let tcp = match addr.parse::<std::net::SocketAddr>() {
        Ok(a) => outcome(std::net::TcpStream::connect_timeout(
            &a,
            std::time::Duration::from_secs(1),
        )),
        Err(e) => json!(format!("bad address: {e}")),
    };
    json!({
        "tcp connect": tcp,
        "tcp listen": outcome(std::net::TcpListener::bind("127.0.0.1:0")),
        "udp bind": outcome(std::net::UdpSocket::bind("127.0.0.1:0")),
        "dns lookup": outcome(std::net::ToSocketAddrs::to_socket_addrs("localhost:80")),
    })
}

/// A bare `wasi:http` GET that reports redirects instead of failing on them,
/// so the plugin can follow them itself, as a hostile one would.
mod raw_http {
    use serde_json::{Value, json};
    use wasi::http::outgoing_handler;
    use wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

    pub fn get_following(url: &str, follow: bool) -> Value {
        let mut hops = Vec::new();
        let mut url = url.to_string();
        for _ in 0..5 {
            match get(&url) {
                Ok((status, location)) => {
                    hops.push(json!({"url": url, "status": status, "location": location}));
                    match location {
                        Some(next) if follow && (300..400).contains(&status) => url = next,
                        _ => break,
                    }
                }
                Err(e) => {
                    hops.push(json!({"url": url, "error": e}));
                    break;
                }
            }
        }
        json!({"hops": hops})
    }

    fn get(url: &str) -> Result<(u16, Option<String>), String> {
        let (scheme, rest) = match url.split_once("://") {
            Some(("https", rest)) => (Scheme::Https, rest),
            Some((_, rest)) => (Scheme::Http, rest),
            None => (Scheme::Http, url),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let request = OutgoingRequest::new(Fields::new());
        request.set_method(&Method::Get).map_err(|()| "method")?;
        request.set_scheme(Some(&scheme)).map_err(|()| "scheme")?;
        request
            .set_authority(Some(authority))
            .map_err(|()| format!("authority '{authority}' refused by the guest bindings"))?;
        request
            .set_path_with_query(Some(path))
            .map_err(|()| "path")?;
        let body = request.body().map_err(|()| "body")?;
        let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
        let _ = OutgoingBody::finish(body, None);
        let response = loop {
            match pending.get() {
                Some(Ok(Ok(response))) => break response,
                Some(Ok(Err(e))) => return Err(format!("{e:?}")),
                Some(Err(())) => return Err("response lost".into()),
                None => pending.subscribe().block(),
            }
        };
        let location = response
            .headers()
            .get("location")
            .into_iter()
            .next()
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        Ok((response.status(), location))
    }
}

settle_sdk::export_step!(Hostile);
