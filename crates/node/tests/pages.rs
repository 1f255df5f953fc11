//! The static pages over HTTP, without a browser: every asset is served with
//! its content type and the headers that keep the pages to the gateway's own
//! origin, and the HTML arrives with its stylesheet inlined.

use axum::routing::get;
use axum::Router;
use verinfer_node::gateway::pages;

/// Serves the page routes as the gateway mounts them; returns the base URL.
async fn serve() -> String {
    let app = Router::new()
        .route("/", get(pages::chat))
        .route("/explorer", get(pages::explorer))
        .route("/explorer/{*rest}", get(pages::explorer))
        .route("/assets/{name}", get(pages::asset));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn assets_and_pages_are_served_with_their_types_and_policy() {
    let base = serve().await;
    let http = reqwest::Client::new();
    for (name, kind, body) in pages::ASSETS {
        let r = http
            .get(format!("{base}/assets/{name}"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200, "{name}");
        assert_eq!(header(&r, "content-type"), *kind, "{name}");
        assert_eq!(header(&r, "x-content-type-options"), "nosniff");
        assert_eq!(r.text().await.expect("body"), *body);
    }
    let missing = http
        .get(format!("{base}/assets/nope.js"))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);

    for (path, script) in [
        ("/", "/assets/chat.js"),
        ("/explorer", "/assets/explorer.js"),
        ("/explorer/receipt/00", "/assets/explorer.js"),
        ("/explorer/network", "/assets/explorer.js"),
    ] {
        let r = http.get(format!("{base}{path}")).send().await.expect("get");
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
        let csp = header(&r, "content-security-policy").to_string();
        for need in [
            "default-src 'self'",
            "script-src 'self'",
            "connect-src 'self'",
        ] {
            assert!(csp.contains(need), "{path}: CSP {csp:?} lacks {need}");
        }
        let html = r.text().await.expect("body");
        assert!(
            html.contains("<style>") && !html.contains("href=\"/assets/app.css\""),
            "{path}: the stylesheet is inlined"
        );
        assert!(
            html.contains(&format!("<script type=\"module\" src=\"{script}\">")),
            "{path} loads {script}"
        );
        // Small enough to paint at once: the whole page shell in a few kB.
        assert!(html.len() < 16 * 1024, "{path} is {} bytes", html.len());
    }
}
