//! The chat page and the explorer: static files compiled into the binary
//! (no build step, nothing fetched at run time), served by the gateway.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

const CHAT_HTML: &str = include_str!("pages/chat.html");
const EXPLORER_HTML: &str = include_str!("pages/explorer.html");

/// `(name, content type, bytes)` of every asset under `/assets/`.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("pages/app.css"),
    ),
    (
        "verinfer.js",
        "text/javascript; charset=utf-8",
        include_str!("pages/verinfer.js"),
    ),
    (
        "chat.js",
        "text/javascript; charset=utf-8",
        include_str!("pages/chat.js"),
    ),
    (
        "explorer.js",
        "text/javascript; charset=utf-8",
        include_str!("pages/explorer.js"),
    ),
];

fn html(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `/`: the chat page.
pub async fn chat() -> Response {
    html(CHAT_HTML)
}

/// `/explorer` and `/explorer/...`: the explorer (one page; it routes by path).
pub async fn explorer() -> Response {
    html(EXPLORER_HTML)
}

/// `/assets/{name}`.
pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
