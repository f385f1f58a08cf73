//! The `shredstore` command: `serve` runs the gRPC server; `hash-token` prints
//! the hash a tokens file stores for a bearer token.

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
#[expect(clippy::large_enum_variant, reason = "parsed once at startup")]
enum Command {
    /// Run the gRPC server.
    Serve(ServeArgs),
    /// Read a bearer token on stdin and print its SHA-256 for the tokens file.
    HashToken,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
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
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
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
