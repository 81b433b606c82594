//! `settle bench --http`: the host as its clients see it. Starts its own
//! `settle serve` (this binary, a temporary store, the 3-step `noop` flow of
//! `settle bench`) and drives it from closed-loop clients, each with one
//! keep-alive HTTP/1.1 connection that sends its next request when the
//! answer to the last one arrives:
//!
//! - `POST /v1/flows/bench/runs?wait=30s` at 1, 64 and 1,024 clients: runs/s,
//!   durable steps/s and the latency of the whole answer (accepted, three
//!   steps each durable, read back);
//! - the same without `?wait` at 64 clients: durable submissions/s;
//! - `GET /v1/runs/{id}` with 10,000 runs in flight: a second server started
//!   with `--accept-only` accepts and records runs without driving them
//!   (they wait as after a crash), so every run read is accepted and not
//!   finished; each answer is checked to say so.
//!
//! Client and server share the machine: the figures are the pair's.

use super::bench::{BenchArgs, FLOW, Percentiles, percentiles};
use crate::config::Config;
use crate::model::now_ms;
use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Steps of the bench flow.
const STEPS: usize = 3;
/// Longest a server may take to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest one request may take before the bench gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The targets, printed beside the figures.
const TARGET_SUBMIT_RUNS_S: f64 = 2000.0;
const TARGET_STEPS_S_AT_64: f64 = 5000.0;
const TARGET_P50_AT_1_MS: f64 = 2.5;
const TARGET_READ_P99_MS: f64 = 10.0;

#[derive(Serialize)]
struct Figures {
    cores: usize,
    /// `?wait=30s`, by number of clients.
    submit_wait: Vec<Phase>,
    /// Without `?wait`, 64 clients, the server driving what it accepts.
    submit_no_wait: Phase,
    /// Without `?wait`, 64 clients, the server only accepting.
    submit_accept_only: Phase,
    /// Runs accepted and not finished while status was read.
    runs_in_flight: usize,
    /// `GET /v1/runs/{id}` of runs in flight, by number of clients.
    status_read: Vec<Phase>,
    /// Reads whose answer said the run had finished (must be 0).
    finished_during_reads: usize,
}

/// One closed-loop phase.
#[derive(Serialize)]
struct Phase {
    clients: usize,
    requests: usize,
    seconds: f64,
    per_second: f64,
    /// Durable steps per second (runs per second × 3) for `?wait` phases.
    steps_per_second: f64,
    latency_us: Percentiles,
    /// Answers that were not the expected success.
    failed: usize,
}

/// A `settle serve` child process over a temporary store, killed (by its
/// PID) and its store removed when dropped.
struct ServeChild {
    process: super::serve_child::ServeChild,
    addr: SocketAddr,
    dir: PathBuf,
}

impl ServeChild {
    fn start(config: &Config, name: &str, accept_only: bool) -> anyhow::Result<ServeChild> {
        let dir =
            std::env::temp_dir().join(format!("settle-bench-http-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("flows"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(dir.join("flows/bench.yaml"), FLOW)?;
        let mut args: Vec<std::ffi::OsString> = vec![
            "--data".into(),
            dir.join("data").into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--flows".into(),
            dir.join("flows").into(),
        ];
        for plugins in &config.plugin_dirs {
            args.push("--plugins".into());
            args.push(plugins.into());
        }
        if accept_only {
            args.push("--accept-only".into());
        }
        let process = super::serve_child::ServeChild::start(&args, &dir.join("serve.log"))?;
        let addr = process
            .addr
            .parse()
            .with_context(|| format!("settle serve listens on '{}'", process.addr))?;
        Ok(ServeChild { process, addr, dir })
    }

    /// Waits until the server has resumed its runs and serves.
    async fn ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(mut c) = Client::connect(self.addr).await
                && let Ok((200, _)) = c.request("GET", "/readyz", None).await
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "settle serve at {} is not ready after {START_TIMEOUT:?}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        self.process.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One client: one keep-alive HTTP/1.1 connection.
struct Client {
    send: SendRequest<Full<Bytes>>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Client> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (send, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Client { send })
    }

    /// (status, body) of one request.
    async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&'static str>,
    ) -> anyhow::Result<(u16, Bytes)> {
        let exchange = async {
            self.send.ready().await?;
            let request = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, "127.0.0.1")
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from_static(
                    body.unwrap_or_default().as_bytes(),
                )))?;
            let response = self.send.send_request(request).await?;
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, bytes))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .with_context(|| format!("{method} {path}: no answer within {REQUEST_TIMEOUT:?}"))?
    }
}

/// What one request of a phase is.
#[derive(Clone)]
enum Work {
    /// Submit a run; `wait`: answer once it is done (200 and settled).
    Submit { wait: bool },
    /// Read the status of one of these runs, in turn.
    Read(Arc<Vec<String>>),
}

/// What a phase gathers besides timings.
#[derive(Default)]
struct Outcome {
    phase: Option<Phase>,
    run_ids: Vec<String>,
    finished: usize,
}

/// `clients` connections, `requests` requests between them, closed loop.
async fn closed_loop(
    addr: SocketAddr,
    clients: usize,
    requests: usize,
    work: Work,
) -> anyhow::Result<Outcome> {
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        connections.push(Client::connect(addr).await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut client in connections {
        let (next, work) = (next.clone(), work.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let (mut failed, mut finished) = (0usize, 0usize);
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let t = Instant::now();
                let (status, body) = match &work {
                    Work::Submit { wait: true } => {
                        client
                            .request("POST", "/v1/flows/bench/runs?wait=30s", Some("{}"))
                            .await?
                    }
                    Work::Submit { wait: false } => {
                        client
                            .request("POST", "/v1/flows/bench/runs", Some("{}"))
                            .await?
                    }
                    Work::Read(ids) => {
                        let path = format!("/v1/runs/{}", ids[i % ids.len()]);
                        client.request("GET", &path, None).await?
                    }
                };
                latencies.push(t.elapsed());
                let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let state = answer["state"].as_str().unwrap_or("");
                let ok = match &work {
                    Work::Submit { wait: true } => status == 200 && state == "settled",
                    Work::Submit { wait: false } => status == 202,
                    Work::Read(_) => status == 200,
                };
                failed += usize::from(!ok);
                if matches!(work, Work::Read(_)) && answer["stage"] == "done" {
                    finished += 1;
                }
                if let Some(id) = answer["run_id"].as_str() {
                    ids.push(id.to_string());
                }
            }
            anyhow::Ok((latencies, failed, finished, ids))
        });
    }
    let mut latencies = Vec::with_capacity(requests);
    let mut outcome = Outcome::default();
    let mut failed = 0;
    while let Some(joined) = tasks.join_next().await {
        let (l, f, done, ids) = joined.context("a bench client failed")??;
        latencies.extend(l);
        failed += f;
        outcome.finished += done;
        outcome.run_ids.extend(ids);
    }
    let seconds = started.elapsed().as_secs_f64();
    let per_second = requests as f64 / seconds;
    outcome.phase = Some(Phase {
        clients,
        requests,
        seconds,
        per_second,
        steps_per_second: match work {
            Work::Submit { wait: true } => per_second * STEPS as f64,
            _ => 0.0,
        },
        latency_us: percentiles(latencies),
        failed,
    });
    Ok(outcome)
}

fn phase(outcome: &mut Outcome) -> Phase {
    outcome.phase.take().unwrap_or(Phase {
        clients: 0,
        requests: 0,
        seconds: 0.0,
        per_second: 0.0,
        steps_per_second: 0.0,
        latency_us: Percentiles::default(),
        failed: 0,
    })
}

pub async fn bench(config: &Config, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let quick = args.quick;
    let (levels, submissions, in_flight, reads): (&[(usize, usize)], usize, usize, usize) = if quick
    {
        (&[(1, 20), (8, 80), (64, 256)], 200, 500, 500)
    } else {
        (
            &[(1, 1000), (64, 10_000), (1024, 20_480)],
            10_000,
            10_000,
            10_000,
        )
    };
    let mut submit_wait = Vec::new();
    let submit_no_wait;
    {
        let server = ServeChild::start(config, "driving", false)?;
        server.ready().await?;
        // Warm up: compiled plugins loaded, pools filled, pages cached.
        closed_loop(server.addr, 4, 40, Work::Submit { wait: true }).await?;
        for &(clients, runs) in levels {
            submit_wait.push(phase(
                &mut closed_loop(server.addr, clients, runs, Work::Submit { wait: true }).await?,
            ));
        }
        submit_no_wait = phase(
            &mut closed_loop(server.addr, 64, submissions, Work::Submit { wait: false }).await?,
        );
    }
    // Runs in flight: accepted and recorded, not driven.
    let server = ServeChild::start(config, "accepting", true)?;
    server.ready().await?;
    let mut accepted =
        closed_loop(server.addr, 64, in_flight, Work::Submit { wait: false }).await?;
    let submit_accept_only = phase(&mut accepted);
    anyhow::ensure!(
        accepted.run_ids.len() == in_flight,
        "{} of {in_flight} submissions were accepted",
        accepted.run_ids.len()
    );
    let ids = Arc::new(std::mem::take(&mut accepted.run_ids));
    let mut status_read = Vec::new();
    let mut finished_during_reads = 0;
    for clients in [1, 64] {
        let mut read = closed_loop(server.addr, clients, reads, Work::Read(ids.clone())).await?;
        finished_during_reads += read.finished;
        status_read.push(phase(&mut read));
    }
    drop(server);
    let figures = Figures {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        submit_wait,
        submit_no_wait,
        submit_accept_only,
        runs_in_flight: ids.len(),
        status_read,
        finished_during_reads,
    };
    if args.json {
        super::print_json(&figures)?;
    } else {
        print_table(&figures, quick);
    }
    let failed: usize = figures
        .submit_wait
        .iter()
        .chain([&figures.submit_no_wait, &figures.submit_accept_only])
        .chain(&figures.status_read)
        .map(|p| p.failed)
        .sum();
    if failed > 0 || figures.finished_during_reads > 0 {
        eprintln!(
            "error: {failed} request(s) were not answered as expected, {} read(s) found a run finished: the figures do not measure what they say",
            figures.finished_during_reads
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn print_table(f: &Figures, quick: bool) {
    outln!(
        "settle bench --http: 3-step noop flow, every step durable; `settle serve` on 127.0.0.1, closed-loop clients with one keep-alive HTTP/1.1 connection each"
    );
    outln!(
        "(taken {}; client and server share {} core(s); one run each: repeat and take medians){}\n",
        super::time(now_ms()),
        f.cores,
        if quick {
            "\n(--quick: tiny sizes, not figures to quote)"
        } else {
            ""
        }
    );
    outln!(
        "{:<46} {:>9} {:>10} {:>9} {:>9} {:>7}   target",
        "",
        "runs/s",
        "steps/s",
        "p50 ms",
        "p99 ms",
        "failed"
    );
    let row = |name: String, p: &Phase, steps: bool, target: String| {
        outln!(
            "{name:<46} {:>9.0} {:>10} {:>9.2} {:>9.2} {:>7}   {target}",
            p.per_second,
            if steps {
                format!("{:.0}", p.steps_per_second)
            } else {
                "-".into()
            },
            ms(p.latency_us.p50),
            ms(p.latency_us.p99),
            p.failed,
        )
    };
    for p in &f.submit_wait {
        let target = match p.clients {
            1 => format!(
                "p50 <= {TARGET_P50_AT_1_MS} ms: {}",
                verdict(ms(p.latency_us.p50) <= TARGET_P50_AT_1_MS)
            ),
            64 => format!(
                ">= {TARGET_STEPS_S_AT_64:.0} steps/s: {}",
                verdict(p.steps_per_second >= TARGET_STEPS_S_AT_64)
            ),
            _ => String::new(),
        };
        row(
            format!(
                "submit ?wait=30s, {} client(s), {} runs",
                p.clients, p.requests
            ),
            p,
            true,
            target,
        );
    }
    let p = &f.submit_no_wait;
    row(
        format!(
            "submit, no wait, {} clients, {} runs",
            p.clients, p.requests
        ),
        p,
        false,
        format!(
            ">= {TARGET_SUBMIT_RUNS_S:.0} runs/s: {}",
            verdict(p.per_second >= TARGET_SUBMIT_RUNS_S)
        ),
    );
    let p = &f.submit_accept_only;
    row(
        format!("  same, host accepting only, {} runs", p.requests),
        p,
        false,
        String::new(),
    );
    for p in &f.status_read {
        row(
            format!(
                "GET /v1/runs/{{id}}, {} client(s), {} reads",
                p.clients, p.requests
            ),
            p,
            false,
            format!(
                "p99 <= {TARGET_READ_P99_MS} ms: {}",
                verdict(ms(p.latency_us.p99) <= TARGET_READ_P99_MS)
            ),
        );
    }
    outln!(
        "\nstatus reads ran with {} runs accepted and not finished (the host accepting only); answers that said finished: {}",
        f.runs_in_flight,
        f.finished_during_reads
    );
    outln!("runs/s of a GET row are reads/s.");
}
