//! The `aiproxy` binary: parse the command line, build the pipeline, serve it; or run the
//! fake Kiro (`aiproxy fake-kiro`).

use aiproxy::config::{Cli, Command, Config, FakeKiroArgs, LogFormat};
use aiproxy::kiro::fake::{server as fake_server, FakeKiro};
use aiproxy::{pipeline, server, telemetry};
use clap::CommandFactory;
use clap::Parser;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// mimalloc: measured faster on the request path than glibc malloc, as fast as jemalloc (within
/// the runs' spread), and the smallest of the three at idle (README, Benchmarks). Built without
/// transparent huge pages (its `no_thp` feature): with them, its arenas took 2 MiB pages from
/// the start (16 MiB of the 29 MiB idle RSS), and saturation was no better.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Start-up errors caused by configuration exit with 2 (like clap's own errors).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::FakeKiro(args)) => {
            let _log = telemetry::init(LogFormat::Text, None);
            return match runtime() {
                Ok(runtime) => runtime.block_on(fake_kiro(args)),
                Err(code) => code,
            };
        }
        Some(Command::CheckConfig(args)) => return check_config(&args.flags),
        Some(Command::Login(args)) => {
            let _log = telemetry::init(LogFormat::Text, None);
            return operator_command(async {
                aiproxy::cli::login::run(args, &mut std::io::stdout())
                    .await
                    .map_err(|e| e.to_string())
            });
        }
        Some(Command::Accounts(args)) => {
            return operator_command(async {
                aiproxy::cli::accounts::run(args, &mut std::io::stdout())
                    .await
                    .map_err(|e| e.to_string())
            });
        }
        Some(Command::Completions { shell }) => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "aiproxy", &mut script);
            return print(&script);
        }
        Some(Command::Man) => {
            let mut page = Vec::new();
            if let Err(error) = clap_mangen::Man::new(Cli::command()).render(&mut page) {
                eprintln!("aiproxy man: {error}");
                return ExitCode::FAILURE;
            }
            return print(&page);
        }
        None => {}
    }
    let config = match Config::resolve(&cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("aiproxy: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    // Declared after the runtime, so dropped before it: the last spans are exported while
    // the runtime still runs.
    let _log = telemetry::init(config.log_format, Some(runtime.handle()));
    runtime.block_on(run(config))
}

/// Writes `bytes` to stdout (made in memory first: a reader that stops early, like `head`,
/// is no failure).
fn print(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("aiproxy: cannot write to stdout: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `aiproxy [FLAGS] check-config [FLAGS]`: the flags on both sides of the word, parsed as
/// the server parses them (a flag's own problem, like a bad value, is a problem found too).
fn check_config(after: &[String]) -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let word = args
        .iter()
        .position(|arg| arg == "check-config")
        .unwrap_or(args.len());
    let flags = args[..word]
        .iter()
        .cloned()
        .chain(after.iter().map(Into::into));
    let cli = match Cli::try_parse_from(flags) {
        Ok(cli) => cli,
        Err(error) => {
            println!("problem: {}", error.to_string().trim_end());
            return ExitCode::FAILURE;
        }
    };
    // The accounts are built on the runtime, as the server builds them (no task reaches
    // Kiro: the catalog refresh and the probes are started only by `serve`).
    let report = match runtime() {
        Ok(runtime) => runtime.block_on(async { aiproxy::check_config::check(&cli) }),
        Err(code) => return code,
    };
    print!("{}", report.text);
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs an operator command (`login`, `accounts`) to its end: exit 1 with its message on
/// stderr when it fails.
fn operator_command(command: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("aiproxy: {message}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("aiproxy: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        })
}

/// How long start-up waits for the accounts' model lists.
const CATALOG_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Prints the first stdout line that scripts and tests wait for (useful with `--port 0`).
fn announce(what: &str, scheme: &str, addr: std::net::SocketAddr) {
    // Written, not printed: a reader that went away after the first line is no reason to
    // stop.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{what} listening on {scheme}://{addr}");
    let _ = stdout.flush();
}

async fn run(config: Config) -> ExitCode {
    let pipeline::Built {
        pipeline,
        accounts,
        views,
    } = match pipeline::build_with_accounts(&config) {
        Ok(built) => built,
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
    if !config.disabled_layers.is_empty() {
        tracing::warn!(layers = ?config.disabled_layers, "pipeline layers switched off");
    }
    if config.kiro_mock_mode {
        tracing::warn!(
            "mock mode: answers come from the built-in fake Kiro, not from real accounts"
        );
    }
    let accounts = std::sync::Arc::new(accounts);
    let console = aiproxy::console::Console::new(&config, std::sync::Arc::clone(&accounts), views);
    // The catalog the accounts serve, read before the server announces itself (bounded:
    // an unreachable Kiro leaves the file's catalog in place until the read finishes).
    let first_read = tokio::spawn({
        let accounts = std::sync::Arc::clone(&accounts);
        async move { accounts.refresh_models().await }
    });
    if tokio::time::timeout(CATALOG_WAIT, first_read)
        .await
        .is_err()
    {
        tracing::warn!(
            "the accounts have not listed their models within {}s; serving the catalog file until they do",
            CATALOG_WAIT.as_secs()
        );
    }
    tokio::spawn(aiproxy::kiro::accounts::refresh_models_every(
        std::sync::Arc::clone(&accounts),
    ));
    tokio::spawn(aiproxy::kiro::accounts::watch(std::sync::Arc::clone(
        &accounts,
    )));
    tokio::spawn(aiproxy::kiro::accounts::probe(accounts));
    // Both before the "listening" line: a client (or a test) may act on it at once.
    let limits = server_limits(&config);
    let shutdown = server::shutdown_signal();
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
    // The metrics port is bound before either is announced: a client (or a test) may use
    // both as soon as it reads the first line.
    let metrics = match config.metrics_port {
        Some(port) => match server::bind(&config.host, port).await {
            Ok(metrics) => Some(metrics),
            Err(error) => {
                eprintln!(
                    "aiproxy: cannot listen on {}:{port} (--metrics-port): {error}",
                    config.host
                );
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    match listener.local_addr() {
        Ok(addr) => {
            announce("aiproxy", "http", addr);
            tracing::info!(%addr, provider = %config.model_provider, "listening");
            match &console {
                Some(_) => tracing::info!("operator console at http://{addr}/console"),
                None => tracing::info!(
                    "operator console off; start with --admin-key KEY (or AIPROXY_ADMIN_KEY) to turn it on at /console"
                ),
            }
        }
        Err(error) => tracing::warn!(%error, "cannot read the bound address"),
    }
    if let Some(metrics) = metrics {
        if let Ok(addr) = metrics.local_addr() {
            announce("aiproxy metrics", "http", addr);
            tracing::info!(%addr, "metrics port listening (GET /metrics, and the console when it is on)");
        }
        // Ends with the process: scrapes need no draining.
        let only = aiproxy::console::Mount::new(
            server::metrics_port::MetricsOnly(pipeline.clone()),
            console.clone(),
        );
        tokio::spawn(server::serve(metrics, only, std::future::pending(), limits));
    }
    server::serve(
        listener,
        aiproxy::console::Mount::new(pipeline, console),
        shutdown,
        limits,
    )
    .await;
    ExitCode::SUCCESS
}

/// The server's client limits, the descriptor limit raised to its hard limit first.
fn server_limits(config: &Config) -> server::Limits {
    let nofile = match server::fd_limit::raise() {
        Ok((before, after)) => {
            tracing::info!(before, after, "descriptor limit (RLIMIT_NOFILE)");
            after
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read or raise the descriptor limit; assuming 1024");
            server::ASSUMED_NOFILE
        }
    };
    let limits = server::Limits::from_config(config, nofile);
    tracing::info!(
        max_client_connections = limits.max_connections,
        header_read_timeout_secs = limits.header_read_timeout.as_secs(),
        body_read_timeout_secs = limits.body_read_timeout.as_secs(),
        idle_timeout_secs = limits.idle_timeout.as_secs(),
        "client limits"
    );
    limits
}

async fn fake_kiro(args: &FakeKiroArgs) -> ExitCode {
    // As the proxy does: the fake's connection cap follows the descriptor limit, and a
    // benchmark holds a thousand streams open at once.
    if let Err(error) = server::fd_limit::raise() {
        tracing::warn!(%error, "cannot raise the descriptor limit");
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match server::tls::acceptor(cert, key) {
            Ok(acceptor) => Some(acceptor),
            Err(error) => {
                eprintln!("aiproxy fake-kiro: {error}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let shutdown = server::shutdown_signal();
    let listener = match server::bind(&args.host, args.port).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "aiproxy fake-kiro: cannot listen on {}:{}: {error}",
                args.host, args.port
            );
            return ExitCode::FAILURE;
        }
    };
    let fake = FakeKiro::server(
        Duration::from_secs(args.token_ttl),
        Duration::from_millis(args.event_delay_ms),
    );
    if let Ok(addr) = listener.local_addr() {
        announce("fake-kiro", scheme, addr);
    }
    let listening = fake_server::Listening {
        tls,
        h2_max_streams: args.max_concurrent_streams,
    };
    fake_server::serve(listener, fake, listening, shutdown).await;
    ExitCode::SUCCESS
}
