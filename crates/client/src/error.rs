//! The client's error: an RFC 9457 problem the server answered, or a failure to reach it or to
//! read its answer.

use serde::Deserialize;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status; `code` and `detail` come from its problem body.
    #[error("{status} {code}: {detail}")]
    Api {
        /// The HTTP status (401, 404, 409, 422, 503, ...).
        status: u16,
        /// The problem's stable `code` (`app_not_found`, ...); `http_<status>` when the body was
        /// not a problem.
        code: String,
        /// The problem's `detail` (never a secret).
        detail: String,
        /// The `x-request-id` of the answer, for the server's logs.
        request_id: Option<String>,
    },
    /// The server could not be reached (refused, timed out, TLS failed, ...).
    #[error("{0}")]
    Connect(String),
    /// The base URL is not an http(s) URL.
    #[error("invalid server URL {0}")]
    InvalidUrl(String),
    /// The server answered success with a body of another shape than expected.
    #[error("unexpected answer: {reason}")]
    Decode { reason: String, request_id: Option<String> },
}

#[derive(Deserialize)]
struct Problem {
    code: Option<String>,
    detail: Option<String>,
    title: Option<String>,
}

impl Error {
    pub(crate) fn from_problem(status: u16, body: &[u8], request_id: Option<String>) -> Error {
        let problem: Option<Problem> = serde_json::from_slice(body).ok();
        let (code, detail) = match problem {
            Some(p) => (p.code.unwrap_or_else(|| format!("http_{status}")), p.detail.or(p.title).unwrap_or_default()),
            None => (format!("http_{status}"), String::from_utf8_lossy(body).chars().take(500).collect()),
        };
        Error::Api { status, code, detail, request_id }
    }

    /// The HTTP status of an [`Error::Api`].
    ///
    /// ```
    /// let e = custody_client::Error::Connect("refused".into());
    /// assert_eq!(e.status(), None);
    /// ```
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The problem `code` of an [`Error::Api`].
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The request id of the failing answer, when the server sent one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Api { request_id, .. } | Error::Decode { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_read_and_other_bodies_kept_short() {
        let e = Error::from_problem(
            404,
            br#"{"code":"app_not_found","detail":"no app 1","status":404}"#,
            Some("r1".into()),
        );
        assert_eq!(e.status(), Some(404));
        assert_eq!(e.code(), Some("app_not_found"));
        assert_eq!(e.request_id(), Some("r1"));
        assert_eq!(e.to_string(), "404 app_not_found: no app 1");
        let e = Error::from_problem(502, b"bad gateway", None);
        assert_eq!(e.code(), Some("http_502"));
        assert_eq!(e.to_string(), "502 http_502: bad gateway");
    }
}
