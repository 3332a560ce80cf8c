//! `followup-bare-handler`: the floor `scripts/load` holds the host to. An axum server on
//! 127.0.0.1:0 whose one handler reads the body, parses it into a JSON tree and answers a
//! small JSON object, with the host's allocator and runtime, and nothing else: no token
//! check, limits, journal, store or plugin.

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn book(body: Bytes) -> impl IntoResponse {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(tree) => {
            let parts = tree["OrderedParts"].as_array().map_or(0, Vec::len);
            let answer = format!(r#"{{"OrderNum":"FU-BARE","OrderedParts":{parts}}}"#);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                answer,
            )
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "application/json")],
            format!(r#"{{"detail":{:?}}}"#, e.to_string()),
        ),
    }
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let app = Router::new().route("/followup/{id}", post(book));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            println!("followup listening on http://{}", listener.local_addr()?);
            axum::serve(listener, app).await?;
            Ok(())
        })
}
