//! A minimal cookie jar for test clients that walk browser flows by hand (the connect flow binds
//! itself to the browser with a cookie): it remembers every `Set-Cookie` by name (forgetting
//! those set with `Max-Age=0`) and sends them all back. Enough for Custody's own cookies, which
//! the tests' requests are the only users of; not a general implementation (no domains, paths
//! or expiry).

use reqwest::header::{HeaderMap, COOKIE, SET_COOKIE};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The cookies one test "browser" holds.
#[derive(Debug, Default)]
pub struct CookieJar(Mutex<BTreeMap<String, String>>);

impl CookieJar {
    pub const fn new() -> CookieJar {
        CookieJar(Mutex::new(BTreeMap::new()))
    }

    /// Remembers the cookies a response sets (and forgets those it deletes).
    pub fn store(&self, headers: &HeaderMap) {
        let mut jar = self.0.lock().unwrap();
        for value in headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()) {
            let mut parts = value.split(';');
            let Some((name, val)) = parts.next().and_then(|p| p.trim().split_once('=')) else { continue };
            if parts.any(|attr| attr.trim().eq_ignore_ascii_case("max-age=0")) || val.is_empty() {
                jar.remove(name);
            } else {
                jar.insert(name.to_owned(), val.to_owned());
            }
        }
    }

    /// GETs `url` as the browser: sends the jar's cookies and keeps what the answer sets.
    pub async fn get(&self, http: &reqwest::Client, url: &str) -> reqwest::Response {
        let header = self.0.lock().unwrap().iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ");
        let mut request = http.get(url);
        if !header.is_empty() {
            request = request.header(COOKIE, header);
        }
        let response = request.send().await.expect("GET sent");
        self.store(response.headers());
        response
    }
}
