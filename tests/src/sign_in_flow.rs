//! Helpers for the sign-in suites: registering Custody as an OIDC client at the fake IdP and
//! setting the app's OIDC client, walking the IdP's login form over HTTP, and a minimal
//! cookie-keeping "browser" on `reqwest` for the Wallet.

use crate::fake_idp::FakeIdp;
use crate::harness::TestServer;
use reqwest::header::{HeaderMap, COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The client id Custody is registered under at the fake IdP.
pub const CLIENT_ID: &str = "custody-test-client";
/// Its client secret.
pub const CLIENT_SECRET: &str = "fake-idp-client-secret-0123456789";

/// Registers Custody's redirect URIs and logout URL (as the IdP object lists them) at the fake
/// IdP under [`CLIENT_ID`].
pub fn register_custody(public_url: &str, idp: &FakeIdp) {
    idp.register_client(
        CLIENT_ID,
        CLIENT_SECRET,
        &[&format!("{public_url}/v1/auth/callback"), &format!("{public_url}/wallet/auth/callback")],
        &[&format!("{public_url}/wallet/sign-in")],
    );
}

/// Sets the app's OIDC client to [`CLIENT_ID`], with `extra` merged into the body.
pub async fn put_oidc(server: &TestServer, app: &str, extra: Value) -> crate::harness::Answer {
    let mut body = json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    server.admin(reqwest::Method::PUT, &format!("/v1/apps/{app}/identity-provider/oidc"), Some(body)).await
}

/// An app whose IdP is `idp` with sign-in set up end to end: the IdP advertises its sign-in
/// endpoints, Custody is registered there, and the app's OIDC client is set. Returns (app id,
/// API key).
pub async fn sign_in_app(server: &TestServer, idp: &FakeIdp, name: &str) -> (String, String) {
    idp.advertise_sign_in();
    register_custody(&server.base, idp);
    let (app, key) = server.create_app(name).await;
    server.attach_idp(&app, idp, json!({})).await;
    let a = put_oidc(server, &app, json!({})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    (app, key)
}

/// The query parameters of a URL.
pub fn query_of(url: &str) -> BTreeMap<String, String> {
    url::Url::parse(url).expect("absolute URL").query_pairs().into_owned().collect()
}

/// A response as a browser would keep it: status, headers, body text.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Page {
    /// The `Location` header.
    pub fn location(&self) -> String {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    }

    /// Every `Set-Cookie` header.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok().map(str::to_owned)).collect()
    }

    /// The `Set-Cookie` header for cookie `name`.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().into_iter().find(|c| c.starts_with(&format!("{name}=")))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    }

    /// The value of the hidden input `name` (the first one), as the page renders it.
    pub fn hidden_input(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.text.find(&marker)? + marker.len();
        let end = self.text[start..].find('"')? + start;
        Some(self.text[start..end].replace("&amp;", "&").replace("&quot;", "\""))
    }
}

/// A cookie-keeping HTTP client that follows no redirects (tests look at each hop). Cookies are
/// kept by name; `Max-Age=0` deletes one. Paths and hosts are not tracked: the suites talk to
/// one server.
#[derive(Debug)]
pub struct Browser {
    http: reqwest::Client,
    pub cookies: BTreeMap<String, String>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        Self { http, cookies: BTreeMap::new() }
    }

    fn cookie_header(&self) -> Option<String> {
        (!self.cookies.is_empty())
            .then(|| self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "))
    }

    async fn keep(&mut self, response: reqwest::Response) -> Page {
        let status = response.status();
        let headers = response.headers().clone();
        for value in headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()) {
            let first = value.split(';').next().unwrap_or_default();
            if let Some((name, v)) = first.split_once('=') {
                let deleted = value.to_ascii_lowercase().contains("max-age=0");
                if deleted || v.is_empty() {
                    self.cookies.remove(name.trim());
                } else {
                    self.cookies.insert(name.trim().to_owned(), v.trim().to_owned());
                }
            }
        }
        let text = response.text().await.unwrap_or_default();
        Page { status, headers, text }
    }

    /// `GET url` with the kept cookies.
    pub async fn get(&mut self, url: &str) -> Page {
        let mut request = self.http.get(url);
        if let Some(c) = self.cookie_header() {
            request = request.header(COOKIE, c);
        }
        let response = request.send().await.expect("request sent");
        self.keep(response).await
    }

    /// `POST url` with a form body and the kept cookies.
    pub async fn post_form(&mut self, url: &str, fields: &[(&str, &str)]) -> Page {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        let mut request =
            self.http.post(url).header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(body);
        if let Some(c) = self.cookie_header() {
            request = request.header(COOKIE, c);
        }
        let response = request.send().await.expect("request sent");
        self.keep(response).await
    }

    /// Signs `username` in at the fake IdP: opens `authorize_url` (the login form), submits
    /// the form, and returns the IdP's redirect (to Custody's callback, with `code` and `state`).
    pub async fn log_in_at_idp(&mut self, authorize_url: &str, username: &str) -> String {
        let form = self.get(authorize_url).await;
        assert_eq!(form.status, StatusCode::OK, "login form: {}", form.text);
        assert!(form.text.contains("<form method=\"post\" action=\"/authorize\">"), "{}", form.text);
        assert!(form.text.contains("<label for=\"username\">"), "{}", form.text);
        let url = url::Url::parse(authorize_url).expect("absolute URL");
        let action = format!("{}/authorize", url.origin().ascii_serialization());
        let mut fields: Vec<(String, String)> =
            ["client_id", "redirect_uri", "state", "nonce", "code_challenge", "scope"]
                .iter()
                .filter_map(|name| form.hidden_input(name).map(|v| (name.to_string(), v)))
                .collect();
        fields.push(("username".into(), username.into()));
        fields.push(("action".into(), "sign-in".into()));
        let borrowed: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let submitted = self.post_form(&action, &borrowed).await;
        assert_eq!(submitted.status, StatusCode::FOUND, "login: {}", submitted.text);
        submitted.location()
    }
}
