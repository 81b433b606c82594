//! `settle-demo-service --listen ADDR --data DIR`: the demo's outside world
//! on its own. `settle demo-service` runs the same service.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "settle-demo-service",
    about = "The demo's outside world over HTTP"
)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:7300")]
    listen: SocketAddr,
    /// Where its journal lives.
    #[arg(long)]
    data: PathBuf,
    /// Serve `POST /drift/transfers`, which changes the world behind
    /// Settle's back (tests and drills only).
    #[arg(long)]
    drift_hooks: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    settle_demo_service::serve(args.listen, &args.data, args.drift_hooks).await
}
