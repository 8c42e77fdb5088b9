//! A Developer Portal client for the HTTP suite: a browser without a browser. It keeps the
//! `custody_portal` cookie, reads the CSRF token out of the last page, and submits forms.

use crate::harness::{TestServer, ADMIN_TOKEN};
use reqwest::header::{HeaderMap, COOKIE, SET_COOKIE};
use reqwest::StatusCode;

/// One answer of the portal: status, headers and the HTML.
#[derive(Debug)]
pub struct PortalPage {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub html: String,
}

impl PortalPage {
    /// The CSRF token in the page's forms.
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.html.find(marker).expect("a form with a CSRF token") + marker.len();
        let end = self.html[start..].find('"').unwrap() + start;
        self.html[start..end].to_owned()
    }

    /// The `Location` of a redirect.
    pub fn location(&self) -> &str {
        self.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The `Set-Cookie` headers.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
    }
}

/// A signed-in (or not yet) portal browser.
#[derive(Debug)]
pub struct PortalClient<'a> {
    pub server: &'a TestServer,
    /// The session cookie's value.
    pub session: Option<String>,
}

impl<'a> PortalClient<'a> {
    pub fn new(server: &'a TestServer) -> Self {
        Self { server, session: None }
    }

    /// Signs in with the admin token and keeps the session.
    pub async fn signed_in(server: &'a TestServer) -> Self {
        let mut client = Self::new(server);
        let page = client.post("/portal/sign-in", &[("admin_token", ADMIN_TOKEN)]).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.html);
        client.session = Some(session_of(&page).expect("a session cookie"));
        client
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> PortalPage {
        let request = match &self.session {
            Some(s) => request.header(COOKIE, format!("custody_portal={s}")),
            None => request,
        };
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let html = response.text().await.unwrap_or_default();
        PortalPage { status, headers, html }
    }

    pub async fn get(&self, path: &str) -> PortalPage {
        self.send(self.server.http.get(self.server.url(path))).await
    }

    /// Posts a form as is (no CSRF token added).
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> PortalPage {
        let body: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        let request = self
            .server
            .http
            .post(self.server.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(request).await
    }

    /// Posts a form with the session's CSRF token, read from the page at `from`.
    pub async fn submit(&self, from: &str, path: &str, fields: &[(&str, &str)]) -> PortalPage {
        let csrf = self.get(from).await.csrf();
        let mut all: Vec<(&str, &str)> = vec![("csrf", &csrf)];
        all.extend_from_slice(fields);
        self.post(path, &all).await
    }
}

/// The `custody_portal` value a response sets, if any (empty when it clears it).
pub fn session_of(page: &PortalPage) -> Option<String> {
    page.set_cookies()
        .iter()
        .find_map(|c| c.strip_prefix("custody_portal=").map(|rest| rest.split(';').next().unwrap_or("").to_owned()))
}
