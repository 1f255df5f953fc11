//! The chat page and the explorer: static files compiled into the binary
//! (no build step, nothing fetched at run time), served by the gateway.
//!
//! The pages are plain HTML, CSS and ES modules in `pages/`. Each HTML page
//! links `app.css`; when serving, the gateway inlines that stylesheet so the
//! first paint needs no second request. A content security policy keeps the
//! pages to the gateway's own origin: no script, style or fetch from
//! anywhere else.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};

const APP_CSS: &str = include_str!("pages/app.css");

/// The tag each page links its stylesheet with; replaced by the inlined CSS.
const CSS_LINK: &str = r#"<link rel="stylesheet" href="/assets/app.css">"#;

static CHAT_HTML: LazyLock<String> = LazyLock::new(|| inline_css(include_str!("pages/chat.html")));
static EXPLORER_HTML: LazyLock<String> =
    LazyLock::new(|| inline_css(include_str!("pages/explorer.html")));

/// `(name, content type, bytes)` of every asset under `/assets/`.
pub const ASSETS: &[(&str, &str, &str)] = &[
    ("app.css", "text/css; charset=utf-8", APP_CSS),
    (
        "verinfer.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../../../clients/js/verinfer.js"),
    ),
    (
        "receipt.js",
        "text/javascript; charset=utf-8",
        include_str!("pages/receipt.js"),
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

/// Only the gateway's own origin: scripts and styles from `/assets/` (plus
/// the inlined stylesheet and the style attributes of chart legends), data
/// from its API, nothing framed, no plugins.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

fn inline_css(page: &str) -> String {
    page.replacen(CSS_LINK, &format!("<style>{APP_CSS}</style>"), 1)
}

fn security_headers() -> [(HeaderName, &'static str); 3] {
    [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ]
}

fn html(body: &'static str) -> Response {
    (
        security_headers(),
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
    html(CHAT_HTML.as_str())
}

/// `/explorer` and `/explorer/...`: the explorer (one page; it routes by path).
pub async fn explorer() -> Response {
    html(EXPLORER_HTML.as_str())
}

/// `/assets/{name}`.
pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => (
            security_headers(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pages() -> [(&'static str, &'static str); 2] {
        [
            ("chat.html", include_str!("pages/chat.html")),
            ("explorer.html", include_str!("pages/explorer.html")),
        ]
    }

    /// Every `/assets/...` a page or module refers to is served, and every
    /// module import names an asset.
    #[test]
    fn every_referenced_asset_exists() {
        let served = |name: &str| ASSETS.iter().any(|(n, _, _)| *n == name);
        let sources = pages()
            .into_iter()
            .chain(ASSETS.iter().map(|(n, _, b)| (*n, *b)));
        for (file, text) in sources {
            for (i, _) in text.match_indices("/assets/") {
                let name: String = text[i + "/assets/".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                    .collect();
                assert!(served(&name), "{file} refers to /assets/{name}, not served");
            }
            for (i, _) in text.match_indices("from \"./") {
                let name: String = text[i + "from \"./".len()..]
                    .chars()
                    .take_while(|c| *c != '"')
                    .collect();
                assert!(served(&name), "{file} imports ./{name}, not served");
            }
        }
    }

    /// The pages work with no network beyond the gateway: no absolute URL
    /// to load anything from (the SVG namespace is a name, not a fetch).
    #[test]
    fn no_external_urls() {
        let sources = pages()
            .into_iter()
            .chain(ASSETS.iter().map(|(n, _, b)| (*n, *b)));
        for (file, text) in sources {
            let stripped = text.replace("\"http://www.w3.org/2000/svg\"", "");
            for bad in ["http://", "https://", "src=\"//", "href=\"//", "url("] {
                assert!(
                    !stripped.contains(bad),
                    "{file} contains {bad:?}: pages load nothing from outside the gateway"
                );
            }
        }
    }

    #[test]
    fn stylesheet_is_inlined_once() {
        for page in [CHAT_HTML.as_str(), EXPLORER_HTML.as_str()] {
            assert!(!page.contains(CSS_LINK), "the link tag was replaced");
            assert_eq!(page.matches("<style>").count(), 1);
            assert!(page.contains(":root{"));
        }
    }

    #[test]
    fn pages_are_labelled_documents() {
        for (file, text) in pages() {
            for need in [
                "<!doctype html>",
                "<html lang=\"en\">",
                "name=\"viewport\"",
                "<main",
                "<title>",
                CSS_LINK,
            ] {
                assert!(text.contains(need), "{file} lacks {need}");
            }
        }
    }
}
