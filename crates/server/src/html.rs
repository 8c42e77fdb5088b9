//! Server-rendered HTML for the Wallet and the sign-in callback pages: no build step, no
//! JavaScript, accessible markup (a `lang`, one `h1` per page, labelled controls, buttons that
//! are buttons), one small inline style sheet.
//!
//! Every HTML response carries the same security headers: a Content-Security-Policy that allows
//! no script at all and only this module's style sheet (by its hash), forms posting only to
//! this server and the origins a page names (the IdP it redirects to), no framing
//! (`frame-ancestors 'none'` and `X-Frame-Options: DENY`), `Referrer-Policy: no-referrer` (sign-in
//! URLs carry states and codes), `Cache-Control: no-store` and `X-Content-Type-Options: nosniff`.
//!
//! Text is escaped at the point it enters markup: [`escape`] for element content and attribute
//! values alike (attributes are always double-quoted).

use crate::json::{rfc3339, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use custody_identity::UnixTime;
use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use hyper::{Response, StatusCode};
use std::sync::LazyLock;

/// The one style sheet, inlined in every page and allowed by its hash.
const STYLE: &str = "\
:root{color-scheme:light}\
body{margin:0;font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;line-height:1.5;color:#1b1f24;background:#f3f5f7}\
main{max-width:56rem;margin:2.5rem auto;padding:1.5rem 2rem 2rem;background:#fff;border:1px solid #d5dbe1;border-radius:10px}\
h1{font-size:1.6rem;line-height:1.25;margin:.2rem 0 1rem}\
.top{display:flex;justify-content:space-between;align-items:flex-start;gap:1rem;flex-wrap:wrap}\
.eyebrow{margin:0;color:#4b5663;font-size:.9rem}\
.muted{color:#4b5663}\
.notice{padding:.6rem .9rem;border-radius:6px;border:1px solid #9ccfb0;background:#eaf5ee}\
.notice.error{border-color:#eba49c;background:#fdeeec}\
table{width:100%;border-collapse:collapse;margin:1rem 0}\
caption{text-align:left;font-weight:600;padding-bottom:.4rem}\
th,td{padding:.55rem .6rem;text-align:left;vertical-align:top;border-bottom:1px solid #e2e6ea}\
thead th{font-size:.8rem;letter-spacing:.04em;text-transform:uppercase;color:#4b5663}\
td.scopes{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.85rem;word-break:break-word}\
th .account{font-weight:400;color:#4b5663}\
time{white-space:nowrap}\
.status{font-weight:600}.status-active{color:#17663a}.status-expired{color:#8a5a00}.status-revoked{color:#5b6570}\
form{margin:0}\
button{font:inherit;padding:.45rem 1.1rem;border-radius:6px;border:1px solid #1d5fbf;background:#1d5fbf;color:#fff;cursor:pointer}\
button:hover{background:#174d9c}\
button.secondary{background:#fff;color:#1d5fbf}button.secondary:hover{background:#eef4fc}\
button.danger{background:#fff;color:#a8261b;border-color:#a8261b}button.danger:hover{background:#fdeeec}\
a{color:#1d5fbf}\
button:focus-visible,a:focus-visible{outline:3px solid #e8a200;outline-offset:2px}\
.visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}\
";

/// `'sha256-…'` of [`STYLE`], for `style-src`.
static STYLE_SOURCE: LazyLock<String> =
    LazyLock::new(|| format!("'sha256-{}'", STANDARD.encode(openssl::sha::sha256(STYLE.as_bytes()))));

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A time for people, in a `<time>` element: `2026-11-22 10:00 UTC`.
pub fn time(t: UnixTime) -> String {
    let machine = rfc3339(t);
    let human = format!("{} UTC", machine.replace('T', " ").trim_end_matches('Z').get(..16).unwrap_or(&machine));
    format!(r#"<time datetime="{}">{}</time>"#, escape(&machine), escape(&human))
}

/// The origin (`scheme://host[:port]`) of an absolute URL, for `form-action`.
pub fn origin_of(url: &str) -> Option<String> {
    let origin = url::Url::parse(url).ok()?.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// A page: its title (text), its body (markup, escaped by the caller), and the origins other
/// than this server that its forms may end up at (a redirect to the IdP).
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub title: String,
    pub body: String,
    pub form_origins: Vec<String>,
}

impl Page {
    pub fn new(title: impl Into<String>, body: impl Into<String>) -> Self {
        Self { title: title.into(), body: body.into(), form_origins: Vec::new() }
    }

    /// Lets this page's forms lead to `origin` (after a redirect).
    pub fn allow_form_origin(mut self, origin: Option<String>) -> Self {
        self.form_origins.extend(origin);
        self
    }

    fn content_security_policy(&self) -> String {
        let mut form_action = String::from("'self'");
        for origin in &self.form_origins {
            // Origins come from parsed URLs; keep only characters an origin can hold.
            if origin.chars().all(|c| c.is_ascii_alphanumeric() || ":/.-[]".contains(c)) {
                form_action.push(' ');
                form_action.push_str(origin);
            }
        }
        format!(
            "default-src 'none'; style-src {}; img-src 'self'; form-action {form_action}; \
             frame-ancestors 'none'; base-uri 'none'",
            *STYLE_SOURCE
        )
    }

    /// The complete document.
    pub fn render(&self) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <meta name=\"referrer\" content=\"no-referrer\">\n\
             <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{}\n</main>\n</body>\n</html>\n",
            escape(&self.title),
            self.body
        )
    }

    /// The page as a response with `status` and the security headers.
    pub fn response(&self, status: StatusCode) -> HttpResponse {
        let mut response = Response::new(crate::json::full(self.render()));
        *response.status_mut() = status;
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        if let Ok(csp) = HeaderValue::from_str(&self.content_security_policy()) {
            response.headers_mut().insert(HeaderName::from_static("content-security-policy"), csp);
        }
        security_headers(&mut response);
        response
    }
}

/// The headers every browser-facing answer carries (pages and redirects alike).
pub fn security_headers(response: &mut HttpResponse) {
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY"));
    headers.insert(HeaderName::from_static("referrer-policy"), HeaderValue::from_static("no-referrer"));
    headers.insert(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
}

/// The value of cookie `name` in a request's `Cookie` headers, if any (shared by the Wallet and
/// the Developer Portal).
pub fn request_cookie<'a>(headers: &'a hyper::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// A redirect for a browser (`302 Found` or `303 See Other`) with the security headers.
pub fn redirect(status: StatusCode, location: &str) -> HttpResponse {
    let mut response = Response::new(crate::json::full(Bytes::new()));
    *response.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, v);
    }
    security_headers(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(escape(r#"<a href="x">&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
        assert_eq!(escape("plain text"), "plain text");
    }

    #[test]
    fn times_and_origins() {
        assert_eq!(
            time(UnixTime(1_795_341_600)),
            r#"<time datetime="2026-11-22T10:00:00Z">2026-11-22 10:00 UTC</time>"#
        );
        assert_eq!(
            origin_of("https://idp.example.com:8443/authorize?x=1"),
            Some("https://idp.example.com:8443".into())
        );
        assert_eq!(origin_of("http://127.0.0.1:9000/logout"), Some("http://127.0.0.1:9000".into()));
        assert_eq!(origin_of("data:text/html,hi"), None);
    }

    #[test]
    fn pages_carry_the_policy() {
        let page = Page::new("A <title>", "<h1>Hi</h1>").allow_form_origin(Some("https://idp.example.com".into()));
        let response = page.response(StatusCode::OK);
        let csp = response.headers().get("content-security-policy").unwrap().to_str().unwrap().to_owned();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("form-action 'self' https://idp.example.com;"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("script-src"), "{csp}");
        assert!(csp.contains(STYLE_SOURCE.as_str()), "{csp}");
        assert_eq!(response.headers()["x-frame-options"], "DENY");
        assert_eq!(response.headers()["cache-control"], "no-store");
        let html = page.render();
        assert!(html.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
        assert!(html.contains("<title>A &lt;title&gt;</title>"));
    }
}
