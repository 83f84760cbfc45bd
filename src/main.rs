//! The `aiproxy` binary: parse the command line, build the pipeline, serve it.

use aiproxy::config::{Cli, Config};
use aiproxy::{pipeline, server, telemetry};
use clap::Parser;
use std::io::Write;
use std::process::ExitCode;

/// Start-up errors caused by configuration exit with 2 (like clap's own errors).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::resolve(&cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("aiproxy: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    telemetry::init(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("aiproxy: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: Config) -> ExitCode {
    let pipeline = match pipeline::build(&config) {
        Ok(pipeline) => pipeline,
        Err(error) => {
            eprintln!("aiproxy: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if config.api_keys.is_empty() {
        tracing::warn!(
            "no API key configured (--api-key / AIPROXY_API_KEY): every client is allowed"
        );
    }
    if config.kiro_mock_mode {
        tracing::warn!(
            "mock mode: answers come from the built-in fake Kiro, not from real accounts"
        );
    }
    let listener = match server::bind(&config.host, config.port).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "aiproxy: cannot listen on {}:{}: {error}",
                config.host, config.port
            );
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => {
            // Scripts and tests read this first stdout line to find the port (with --port 0).
            println!("aiproxy listening on http://{addr}");
            let _ = std::io::stdout().flush();
            tracing::info!(%addr, provider = %config.model_provider, "listening");
        }
        Err(error) => tracing::warn!(%error, "cannot read the bound address"),
    }
    server::serve(
        listener,
        pipeline,
        server::shutdown_signal(),
        config.shutdown_timeout,
    )
    .await;
    ExitCode::SUCCESS
}
