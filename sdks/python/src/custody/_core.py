"""What the sync and async clients share: configuration, how each call is built, when to retry,
and how answers become objects or errors. Only the sending loop differs between the two.
"""

from __future__ import annotations

import os
import random
import sys
import webbrowser
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, TypeVar, Union
from urllib.parse import quote

import httpx

from ._version import __version__
from .errors import (
    CustodyError,
    SignInFailed,
    Unavailable,
    UserTokenInvalid,
    error_class,
    error_from_problem,
)
from .models import SignIn, User

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 2
DEFAULT_BACKOFF = 0.5
MAX_BACKOFF = 8.0
USER_AGENT = f"custody-python/{__version__}"

# Methods HTTP defines as idempotent: repeating one has the effect of sending it once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

# Headers request() must not let the caller set: Custody owns them (the API key, the user token,
# the grant choice) or strips them before the provider (surfaces.md, section 4).
_RESERVED_PROXY_HEADERS = frozenset({"authorization", "x-user-token", "cookie", "host"})

# Failures where the request cannot have reached Custody's handlers, or the connection broke:
# safe to repeat for an idempotent call. A read timeout is not among them: the server may still
# be working on it, and retrying would multiply the caller's wait.
RETRYABLE_TRANSPORT_ERRORS: Tuple[type, ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)

Params = Optional[Mapping[str, Union[str, int, float, bool, List[str], None]]]


@dataclass(frozen=True)
class Settings:
    """A client's resolved configuration; `repr()` never shows the API key."""

    api_key: str = field(repr=False)
    base_url: str
    timeout: float
    max_retries: int
    backoff: float


def resolve_settings(
    api_key: Optional[str],
    base_url: Optional[str],
    timeout: float,
    max_retries: int,
    backoff: float,
) -> Settings:
    key = api_key if api_key is not None else os.environ.get("CUSTODY_API_KEY")
    if not key:
        raise ValueError("no API key: pass api_key= or set CUSTODY_API_KEY")
    url = base_url if base_url is not None else os.environ.get("CUSTODY_URL", DEFAULT_BASE_URL)
    if not url.startswith(("http://", "https://")):
        raise ValueError("base_url must start with http:// or https://")
    if max_retries < 0:
        raise ValueError("max_retries must be 0 or more")
    return Settings(key, url.rstrip("/"), timeout, max_retries, backoff)


@dataclass
class Call:
    """One logical call to Custody; the sending loop may send it more than once."""

    method: str
    path: str
    user_token: Optional[str] = field(default=None, repr=False)
    json: Any = None
    content: Optional[bytes] = None
    params: Params = None
    extra_headers: Dict[str, str] = field(default_factory=dict, repr=False)
    retryable: bool = False
    # A proxied call returns the provider's answers whatever their status; only Custody's own
    # refusals (no `X-Custody-Proxy` header) become errors.
    proxied: bool = False

    def headers(self, settings: Settings) -> Dict[str, str]:
        headers = dict(self.extra_headers)
        headers["Authorization"] = f"Bearer {settings.api_key}"
        headers.setdefault("User-Agent", USER_AGENT)
        if not self.proxied:
            headers["Accept"] = "application/json"
        if self.user_token is not None:
            headers["X-User-Token"] = self.user_token
        return headers


def proxy_call(
    user_token: str,
    method: str,
    path: str,
    provider: str,
    params: Params,
    json: Any,
    content: Optional[bytes],
    headers: Optional[Mapping[str, str]],
    grant_id: Optional[str],
) -> Call:
    if not provider:
        raise ValueError("provider is required")
    extra: Dict[str, str] = {}
    for name, value in (headers or {}).items():
        lowered = name.lower()
        if lowered in _RESERVED_PROXY_HEADERS or lowered.startswith("x-custody-"):
            raise ValueError(
                f"header {name!r} cannot be set on request(): Custody sets or strips it"
            )
        extra[name] = value
    if grant_id is not None:
        extra["X-Custody-Grant-Id"] = grant_id
    if any(part in (".", "..") for part in path.split("?", 1)[0].split("/")):
        # httpx would resolve them before sending, turning a proxy call into a call to another
        # Custody endpoint with this app's key and this user's token.
        raise ValueError("path must not contain '.' or '..' segments")
    verb = method.upper()
    return Call(
        method=verb,
        path=f"/v1/proxy/{quote(provider, safe='')}/{path.lstrip('/')}",
        user_token=user_token,
        json=json,
        content=content,
        params=params,
        extra_headers=extra,
        retryable=verb in IDEMPOTENT_METHODS,
        proxied=True,
    )


def segment(value: str) -> str:
    """One path segment, percent-encoded so an id cannot add segments."""
    return quote(value, safe="")


def is_custody_refusal(call: Call, response: httpx.Response) -> bool:
    if response.status_code < 400:
        return False
    return not (call.proxied and "x-custody-proxy" in response.headers)


def should_retry_response(call: Call, response: httpx.Response, attempt: int, limit: int) -> bool:
    return (
        call.retryable
        and attempt < limit
        and response.status_code == 503
        and is_custody_refusal(call, response)
    )


def should_retry_error(call: Call, error: Exception, attempt: int, limit: int) -> bool:
    return call.retryable and attempt < limit and isinstance(error, RETRYABLE_TRANSPORT_ERRORS)


def backoff_delay(attempt: int, factor: float, retry_after: Optional[str] = None) -> float:
    """Seconds to wait before retry number `attempt` (0-based): exponential with jitter, or the
    server's `Retry-After` (in seconds) when it names one, capped at MAX_BACKOFF."""
    if retry_after is not None:
        try:
            return min(max(float(retry_after), 0.0), MAX_BACKOFF)
        except ValueError:
            pass
    base = factor * (2**attempt)
    # Jitter spreads the retries of many clients hit by the same outage.
    return float(min(base * (0.5 + random.random() / 2), MAX_BACKOFF))  # noqa: S311


def transport_error(error: Exception) -> Unavailable:
    """A connection failure or timeout as `Unavailable`; the message names the failure's kind
    only (never the request, whose headers hold the secrets)."""
    if isinstance(error, httpx.TimeoutException):
        return Unavailable(
            None, "timeout", f"no answer from Custody in time ({type(error).__name__})"
        )
    return Unavailable(None, "connection_error", f"cannot reach Custody ({type(error).__name__})")


def error_for(response: httpx.Response) -> CustodyError:
    problem: Optional[Mapping[str, Any]] = None
    try:
        parsed = response.json()
        if isinstance(parsed, Mapping):
            problem = parsed
    except ValueError:
        problem = None
    return error_from_problem(response.status_code, problem, response.headers.get("x-request-id"))


def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise CustodyError(
            response.status_code,
            "invalid_response",
            "Custody answered with a body that is not JSON",
            response.headers.get("x-request-id"),
        ) from None


T = TypeVar("T")


def parse(build: Callable[[Any], T], response: httpx.Response) -> T:
    """The answer's JSON as an object; an answer of the wrong shape is a `CustodyError`
    (`invalid_response`), not a KeyError from deep inside the SDK."""
    body = json_body(response)
    try:
        return build(body)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CustodyError(
            response.status_code,
            "invalid_response",
            f"Custody's answer does not have the expected shape ({type(error).__name__})",
            response.headers.get("x-request-id"),
        ) from None


def missing_user_token() -> UserTokenInvalid:
    return UserTokenInvalid(
        None,
        "user_token_missing",
        "no user token: pass one, or build the client with user_token_getter=",
    )


def async_getter_in_sync_client() -> TypeError:
    return TypeError(
        "user_token_getter returned an awaitable: use AsyncCustody for an async getter"
    )


def started_session(response: httpx.Response) -> Tuple[str, str]:
    """(path of the session to poll, URL to open) from `POST /v1/auth/sessions`."""
    started = parse(lambda body: (str(body["session_id"]), str(body["authorize_url"])), response)
    return f"/v1/auth/sessions/{segment(started[0])}", started[1]


def sign_in_outcome(session: Mapping[str, Any]) -> Optional[SignIn]:
    """The SignIn of a completed session, None while pending; raises for every other end."""
    status = session.get("status")
    if status == "pending":
        return None
    if status == "complete":
        token = session.get("user_token")
        if not token:
            raise SignInFailed(
                None,
                "user_token_already_taken",
                "the session completed but its user token was already picked up by another poll",
            )
        return SignIn(user_token=str(token), user=User.from_json(session["user"]))
    if status == "expired":
        raise SignInFailed(None, "session_expired", "the sign-in was not completed in time")
    code = str(session.get("error") or "sign_in_failed")
    cls = error_class(403, code) if code in ("user_suspended", "user_deprovisioned") else None
    detail = f"the sign-in failed at the identity provider or at Custody ({code})"
    if cls is not None:
        raise cls(403, code, detail)
    raise SignInFailed(None, code, detail)


def sign_in_timeout(timeout: float) -> SignInFailed:
    return SignInFailed(
        None, "sign_in_timeout", f"nobody completed the sign-in within {timeout:g} s"
    )


def browser_available() -> bool:
    """False where opening a browser would fail or take over the terminal (a Linux box without
    a display, typically a server or a container)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def show_authorize_url(
    url: str, open_browser: bool, on_authorize_url: Optional[Callable[[str], None]]
) -> None:
    opened = False
    if open_browser and browser_available():
        try:
            opened = webbrowser.open(url)
        except webbrowser.Error:
            opened = False
    if on_authorize_url is not None:
        on_authorize_url(url)
    elif not opened:
        print(f"To sign in, open this URL in a browser:\n  {url}", file=sys.stderr, flush=True)
