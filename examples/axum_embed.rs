//! Embedding aiproxy in an axum application.
//!
//! - the whole aiproxy pipeline is mounted under `/ai` (so `/ai/v1/chat/completions` works),
//! - the app's own `/admin` route is protected by aiproxy's `auth` layer,
//! - `/` stays public.
//!
//! Run: `cargo run --example axum_embed`, then
//! `curl localhost:8080/ai/v1/models` and `curl -H 'x-api-key: admin-key' localhost:8080/admin`.

use aiproxy::config::Config;
use aiproxy_layers::auth::AuthLayer;
use aiproxy_layers::ClientKey;
use axum::routing::get;
use axum::{Extension, Router};

/// The application: an example of what an embedding app looks like (also used by the tests).
pub fn app(aiproxy_config: &Config) -> Result<Router, aiproxy::pipeline::BuildError> {
    let pipeline = aiproxy::pipeline::build(aiproxy_config)?;
    Ok(Router::new()
        .route("/admin", get(admin))
        .route_layer(AuthLayer::new(["admin-key"]))
        .route("/", get(|| async { "hello from the host app" }))
        .nest_service("/ai", pipeline))
}

async fn admin(Extension(client): Extension<ClientKey>) -> String {
    format!("admin area, caller {client}")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = app(&Config::mock())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
