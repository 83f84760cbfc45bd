//! `aiproxy login`: signs in to Kiro (docs/kiro-protocol.md §14.3) and keeps the result as a
//! credential file (`--out`) or a new account of the pool file (`--pool --name`). Only
//! what a shoulder-surfer cannot reuse reaches the terminal: the user code (useless without
//! the user's own approval), links, file names; never a token or a client secret.

use crate::config::LoginArgs;
use crate::kiro::accounts::pool_edit;
use crate::kiro::auth::persist;
use crate::kiro::auth::signin::device::{DeviceFlow, Target};
use crate::kiro::auth::signin::social::{self, SocialFlow};
use crate::kiro::auth::signin::{resolve_profile, SignInError, SignedIn};
use crate::kiro::transport::trust::KiroTrust;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// How long one HTTP call of the sign-in may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the social sign-in waits for its callback.
const CALLBACK_WAIT: Duration = Duration::from_secs(600);

/// Why the login failed (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The sign-in did not finish.
    #[error(transparent)]
    SignIn(#[from] SignInError),
    /// The result could not be kept (the tokens are not printed: sign in again).
    #[error("signed in, but the credential could not be saved: {0}. Nothing was printed; fix that and sign in again")]
    Save(String),
    /// A setting is wrong.
    #[error("{0}")]
    Usage(String),
}

/// Runs `aiproxy login`; what it prints goes to `out` (stdout), progress to stderr.
pub async fn run(args: &LoginArgs, out: &mut impl Write) -> Result<(), LoginError> {
    check_destination(args)?;
    let trust = KiroTrust::load(args.kiro_ca_file.as_deref())
        .map_err(|e| LoginError::Usage(format!("--kiro-ca-file: {e}")))?;
    let http = trust
        .apply(reqwest::Client::builder())
        .map_err(LoginError::Usage)?
        .timeout(CALL_TIMEOUT)
        .build()
        .map_err(|e| LoginError::Usage(format!("cannot set up the HTTP client: {e}")))?;
    let mut signed_in = if args.social {
        social_sign_in(&http, args, out).await?
    } else {
        device_sign_in(&http, args, out).await?
    };
    if signed_in.tokens.profile_arn.is_none() {
        let api_base = args
            .kiro_base_url
            .clone()
            .unwrap_or_else(|| format!("https://q.{}.amazonaws.com", args.region));
        signed_in.tokens.profile_arn = resolve_profile(
            &http,
            &api_base,
            &args.region,
            &signed_in.tokens,
            CALL_TIMEOUT,
        )
        .await;
    }
    let profile = match &signed_in.tokens.profile_arn {
        Some(_) => "with its Kiro profile",
        None => "without a Kiro profile yet (resolved on first use)",
    };
    let saved = save(args, &signed_in).await?;
    let _ = writeln!(out, "Signed in ({}), {profile}.", signed_in.describe());
    let _ = writeln!(out, "{saved}");
    Ok(())
}

/// Refuses a destination that cannot take the result before anyone signs in.
fn check_destination(args: &LoginArgs) -> Result<(), LoginError> {
    if let Some(file) = &args.out {
        if file.exists() {
            return Err(LoginError::Usage(format!(
                "{} exists; login never overwrites a credential (its refresh token would be lost). \
                 Choose another --out, or move that file away first",
                file.display()
            )));
        }
    }
    if let Some(name) = &args.name {
        if !pool_edit::valid_name(name) {
            return Err(LoginError::Usage(
                pool_edit::EditError::BadName(name.clone()).to_string(),
            ));
        }
    }
    Ok(())
}

async fn save(args: &LoginArgs, signed_in: &SignedIn) -> Result<String, LoginError> {
    let credential = signed_in.credential();
    if let Some(file) = &args.out {
        let mut bytes = serde_json::to_vec_pretty(&credential).unwrap_or_default();
        bytes.push(b'\n');
        persist::write_atomically(file, &bytes).map_err(|e| LoginError::Save(e.to_string()))?;
        return Ok(format!(
            "Credential written to {} (mode 0600). Start the proxy with:\n  aiproxy --model-provider kiro-api --kiro-oauth-creds-file {} --api-key YOUR_KEY",
            file.display(),
            file.display()
        ));
    }
    let (Some(pool), Some(name)) = (&args.pool, &args.name) else {
        return Err(LoginError::Usage(
            "give --out FILE or --pool FILE --name NAME".into(),
        ));
    };
    let creds = pool_edit::add(pool, name, &credential)
        .await
        .map_err(|e| LoginError::Save(e.to_string()))?;
    Ok(format!(
        "Account `{name}` added to {} (its credential is {}, mode 0600); a running aiproxy picks it up within seconds.",
        pool.display(),
        creds.display()
    ))
}

async fn device_sign_in(
    http: &reqwest::Client,
    args: &LoginArgs,
    out: &mut impl Write,
) -> Result<SignedIn, LoginError> {
    let target = if args.idc {
        let start_url = args.start_url.clone().unwrap_or_default();
        if !start_url.starts_with("https://") {
            return Err(LoginError::Usage(format!(
                "--start-url `{start_url}` is not an https:// URL (your organisation's, e.g. https://my-org.awsapps.com/start)"
            )));
        }
        Target::idc(args.oidc_url.clone(), start_url, args.region.clone())
    } else {
        Target::builder_id(args.oidc_url.clone())
    };
    let mut flow = DeviceFlow::start(http.clone(), target).await?;
    let prompt = flow.prompt().clone();
    let _ = writeln!(
        out,
        "Open {} and enter the code {} (or open {}).",
        prompt.verification_uri, prompt.user_code, prompt.verification_uri_complete
    );
    print_qr(out, &prompt.verification_uri_complete);
    let _ = writeln!(
        out,
        "Waiting for the approval (the code expires in {} min)...",
        prompt.expires_in.as_secs().div_ceil(60)
    );
    let _ = out.flush();
    if !args.no_browser {
        open_browser(&prompt.verification_uri_complete);
    }
    Ok(*flow.wait().await?)
}

/// The link as a QR code, when stdout is a terminal wide enough for it.
fn print_qr(out: &mut impl Write, link: &str) {
    if !std::io::stdout().is_terminal() {
        return;
    }
    let Ok(code) = qrcode::QrCode::new(link.as_bytes()) else {
        return;
    };
    let art = code
        .render::<qrcode::render::unicode::Dense1x2>()
        .quiet_zone(true)
        .build();
    let width = art.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    let columns = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(80);
    if width <= columns {
        let _ = writeln!(out, "{art}");
    }
}

/// Opens `url` in the desktop's browser, when there is a desktop (quietly does nothing
/// otherwise: the link is printed).
fn open_browser(url: &str) {
    let opener = if let Ok(browser) = std::env::var("BROWSER") {
        browser
    } else if cfg!(target_os = "macos") {
        "open".into()
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        "xdg-open".into()
    } else {
        return;
    };
    let _ = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

async fn social_sign_in(
    http: &reqwest::Client,
    args: &LoginArgs,
    out: &mut impl Write,
) -> Result<SignedIn, LoginError> {
    let (listener, port) = callback_listener(args.callback_port).await?;
    let redirect_uri = format!("http://localhost:{port}{}", social::CALLBACK_PATH);
    let flow = SocialFlow::new(
        http.clone(),
        args.signin_url.as_deref(),
        args.auth_url.as_deref(),
        redirect_uri,
    );
    let _ = writeln!(
        out,
        "Sign in with Google or GitHub at:\n  {}",
        flow.signin_url()
    );
    let _ = writeln!(
        out,
        "Waiting for the browser to come back to localhost:{port}. On a machine without a browser, \
         open the link elsewhere, sign in, and paste here the address the browser ends on \
         (it starts with http://localhost:{port}{}):",
        social::CALLBACK_PATH
    );
    let _ = out.flush();
    if !args.no_browser {
        open_browser(flow.signin_url());
    }
    let callback = tokio::time::timeout(CALLBACK_WAIT, async {
        tokio::select! {
            url = serve_callback(listener) => url,
            Some(url) = pasted() => url,
        }
    })
    .await
    .map_err(|_| {
        SignInError::Callback(format!(
            "no callback within {} min; run the login again",
            CALLBACK_WAIT.as_secs() / 60
        ))
    })?;
    let code = flow.code_from_callback(&callback)?;
    Ok(flow.exchange(&code).await?)
}

/// The callback's listener: `--callback-port`, else the first free of the IDE's ports.
async fn callback_listener(
    port: Option<u16>,
) -> Result<(tokio::net::TcpListener, u16), LoginError> {
    let ports: Vec<u16> = port.map_or_else(|| social::CALLBACK_PORTS.to_vec(), |p| vec![p]);
    for port in &ports {
        if let Ok(listener) =
            tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], *port))).await
        {
            let bound = listener.local_addr().map_or(*port, |a| a.port());
            return Ok((listener, bound));
        }
    }
    Err(LoginError::Usage(format!(
        "none of the callback ports {ports:?} is free on 127.0.0.1; free one, or pick one with --callback-port"
    )))
}

/// The first line typed or pasted on stdin; pending forever when stdin is closed (the
/// local callback may still come).
async fn pasted() -> Option<String> {
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        match std::io::stdin().read_line(&mut line) {
            Ok(n) if n > 0 && !line.trim().is_empty() => Some(line),
            _ => None,
        }
    })
    .await
    .ok()
    .flatten();
    match line {
        Some(line) => Some(line),
        None => std::future::pending().await,
    }
}

/// Serves the local callback until the browser comes back to it; returns the path and
/// query it was called with.
async fn serve_callback(listener: tokio::net::TcpListener) -> String {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let (sender, mut received) = tokio::sync::mpsc::channel::<String>(1);
    loop {
        tokio::select! {
            Some(url) = received.recv() => return url,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let sender = sender.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                        let sender = sender.clone();
                        async move {
                            let path = request.uri().path();
                            let is_callback = path == social::CALLBACK_PATH || path == "/signin/callback";
                            let body = if is_callback {
                                let url = request.uri().to_string();
                                let _ = sender.send(url).await;
                                "aiproxy: sign-in received. You can close this tab and go back to the terminal."
                            } else {
                                "aiproxy is waiting for the Kiro sign-in callback here."
                            };
                            let mut response = http::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                            response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        }
    }
}
