//! The `shredstore` command: `serve` runs the gRPC server; `hash-token` prints
//! the hash a tokens file stores for a bearer token; `load` drives a running
//! server with a request mix and reports throughput and latency.

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shredstore::load::LoadArgs;
use shredstore::server::{ServeArgs, Server, hash_token, shutdown_signal};

#[derive(Parser)]
#[command(
    name = "shredstore",
    version,
    about = "Encrypted message store with crypto-shredding"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once at startup")]
enum Command {
    /// Run the gRPC server.
    Serve(ServeArgs),
    /// Read a bearer token on stdin and print its SHA-256 for the tokens file.
    HashToken,
    /// Generate load against a running server and report throughput, latency
    /// percentiles and errors.
    Load(LoadArgs),
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_writer(std::io::stderr)
        .init();
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Load(args) => load(&args),
        Command::HashToken => {
            let mut token = String::new();
            if std::io::stdin().read_to_string(&mut token).is_err() {
                eprintln!("error: could not read the token from stdin");
                return ExitCode::FAILURE;
            }
            println!("{}", hash_token(token.trim()));
            ExitCode::SUCCESS
        }
        Command::Serve(args) => {
            init_logging();
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(serve(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `shredstore load`: exit 1 if the run could not be carried out (bad flags,
/// no connection), or with `--fail-on-error` if any request failed.
fn load(args: &LoadArgs) -> ExitCode {
    let config = match args.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let report = match runtime.block_on(shredstore::load::run(config)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => j + "\n",
            Err(e) => {
                eprintln!("error: cannot encode the report: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        report.to_string()
    };
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    if let Some(p) = &args.plot {
        eprintln!("plot written to {}", p.display());
    }
    if args.fail_on_error && report.errors > 0 {
        eprintln!(
            "error: {} of {} requests failed",
            report.errors, report.total_ops
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn serve(args: ServeArgs) -> Result<(), shredstore::server::ServerError> {
    let config = args.resolve()?;
    let tls = config.tls.is_some();
    let server = Server::bind(config.clone()).await?;
    let addr = server.local_addr()?;
    let scheme = if tls { "https" } else { "http" };
    let mut banner = format!(
        "shredstore listening on {scheme}://{addr} (gRPC; data dir {})\n",
        config.data_dir.display()
    );
    if let Some(m) = server.metrics_addr() {
        banner.push_str(&format!("metrics on http://{m}/metrics\n"));
    }
    if config.insecure_no_auth && !tls {
        banner.push_str(&format!(
            "try: grpcurl -plaintext -d '{{\"user_id\":\"YWxpY2U=\",\"payload\":\"aGVsbG8=\"}}' {addr} shredstore.v1.Store/Append\n"
        ));
    }
    // A closed stdout must not take the server down: write once, ignore errors.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
    drop(out);
    server.serve(shutdown_signal()).await
}
