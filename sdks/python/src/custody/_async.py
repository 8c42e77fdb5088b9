"""`AsyncCustody`, the asyncio client: the same calls as `Custody`, awaited."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Union

import httpx

from . import _core
from ._core import Call, Params, Settings
from .models import ConnectSession, Grant, SignIn, Token, User

__all__ = ["AsyncCustody"]

log = logging.getLogger("custody")


class AsyncCustody:
    """An asyncio client for one app: its API key, acting for the users whose tokens it passes.

    `api_key` and `base_url` default to `CUSTODY_API_KEY` and `CUSTODY_URL` (then
    `http://127.0.0.1:8080`). Every call that acts for a user takes the user's token first;
    pass None (or leave it out) when the client has a `user_token_getter`.
    `timeout` (seconds) applies to each phase of each HTTP request. Calls that are safe to repeat
    (`me`, `grants`, `token`, `revoke_grant`, the sign-in polls, `request` with GET, HEAD,
    OPTIONS, PUT or DELETE) are retried up to `max_retries` times on a 503 from Custody or a
    broken connection, waiting `backoff * 2**attempt` seconds (with jitter) in between.
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        base_url: Optional[str] = None,
        *,
        user_token_getter: Optional[Callable[[], Union[str, Awaitable[str]]]] = None,
        timeout: float = _core.DEFAULT_TIMEOUT,
        max_retries: int = _core.DEFAULT_MAX_RETRIES,
        backoff: float = _core.DEFAULT_BACKOFF,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> None:
        self._settings: Settings = _core.resolve_settings(
            api_key, base_url, timeout, max_retries, backoff
        )
        self._user_token_getter = user_token_getter
        self._http = httpx.AsyncClient(
            base_url=self._settings.base_url,
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
        )
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def __repr__(self) -> str:
        return f"AsyncCustody(base_url={self._settings.base_url!r})"

    @property
    def base_url(self) -> str:
        return self._settings.base_url

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncCustody:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the calls ------------------------------------------------------------------------

    async def me(self, user_token: Optional[str] = None) -> User:
        """The signed-in user (`GET /v1/me`)."""
        call = Call("GET", "/v1/me", user_token=await self._token(user_token), retryable=True)
        return _core.parse(User.from_json, await self._send(call))

    async def token(
        self,
        user_token: Optional[str] = None,
        *,
        provider: Optional[str] = None,
        grant_id: Optional[str] = None,
    ) -> Token:
        """The user's current access token for `provider` (its active grant) or for `grant_id`.

        Retried like a read: the hand-out has no effect a repeat could double (a due refresh is
        shared by concurrent callers)."""
        if (provider is None) == (grant_id is None):
            raise ValueError("pass exactly one of provider= or grant_id=")
        body = {"provider": provider} if provider is not None else {"grant_id": str(grant_id)}
        call = Call("POST", "/v1/token", await self._token(user_token), json=body, retryable=True)
        return _core.parse(Token.from_json, await self._send(call))

    async def grants(self, user_token: Optional[str] = None) -> List[Grant]:
        """All the user's grants, newest first (every page)."""
        token = await self._token(user_token)
        grants: List[Grant] = []
        cursor: Optional[str] = None
        while True:
            params: Dict[str, Union[str, int]] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            call = Call("GET", "/v1/grants", token, params=params, retryable=True)
            page = _core.json_body(await self._send(call))
            grants.extend(Grant.list_from_json(page))
            cursor = page.get("next_cursor") if isinstance(page, Mapping) else None
            if not cursor:
                return grants

    async def revoke_grant(self, user_token: Optional[str], grant_id: str) -> Grant:
        """Revokes one of the user's grants; its tokens are deleted. Returns the revoked grant."""
        path = f"/v1/grants/{_core.segment(grant_id)}"
        call = Call("DELETE", path, await self._token(user_token), retryable=True)
        return _core.parse(Grant.from_json, await self._send(call))

    async def connect(
        self,
        user_token: Optional[str] = None,
        *,
        provider: str,
        return_url: str,
        scopes: Optional[List[str]] = None,
    ) -> ConnectSession:
        """Starts connecting `provider` for the user: send their browser to `connect_url`; it
        comes back to `return_url` with `grant_id` and `status=connected` (or an error)."""
        body: Dict[str, Any] = {"provider": provider, "return_url": return_url}
        if scopes is not None:
            body["scopes"] = list(scopes)
        call = Call("POST", "/v1/connect/sessions", await self._token(user_token), json=body)
        return _core.parse(ConnectSession.from_json, await self._send(call))

    async def authenticate(
        self,
        open_browser: bool = True,
        timeout: float = 300.0,
        *,
        poll_interval: float = 2.0,
        on_authorize_url: Optional[Callable[[str], None]] = None,
    ) -> SignIn:
        """Signs a user in through the app's identity provider and returns their user token.

        Starts a session (`POST /v1/auth/sessions`), opens its `authorize_url` in a browser
        (or, headless or with `open_browser=False`, prints it to stderr; `on_authorize_url`
        receives it instead of the print), then polls every `poll_interval` seconds until the
        session completes. Raises `SignInFailed` when it fails, expires or `timeout` passes."""
        deadline = time.monotonic() + timeout
        started = await self._send(Call("POST", "/v1/auth/sessions", json={}))
        session_path, authorize_url = _core.started_session(started)
        _core.show_authorize_url(authorize_url, open_browser, on_authorize_url)
        while True:
            session = _core.json_body(await self._send(Call("GET", session_path, retryable=True)))
            outcome = _core.sign_in_outcome(session)
            if outcome is not None:
                return outcome
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _core.sign_in_timeout(timeout)
            await self._sleep(min(poll_interval, remaining))

    async def request(
        self,
        user_token: Optional[str],
        method: str,
        path: str,
        *,
        provider: str,
        params: Params = None,
        json: Any = None,
        content: Optional[bytes] = None,
        headers: Optional[Mapping[str, str]] = None,
        grant_id: Optional[str] = None,
    ) -> httpx.Response:
        """Calls the provider's API as the user, through Custody's proxy: the access token
        never reaches this process. `path` is relative to the provider's API base URL.

        Returns the provider's answer as an `httpx.Response` (read), whatever its status.
        Raises a `CustodyError` only when Custody itself refuses (no grant, policy, revoked
        grant, bad path, ...)."""
        call = _core.proxy_call(
            await self._token(user_token),
            method,
            path,
            provider,
            params,
            json,
            content,
            headers,
            grant_id,
        )
        return await self._send(call)

    # -- plumbing -------------------------------------------------------------------------

    async def _token(self, explicit: Optional[str]) -> str:
        if explicit is not None:
            return explicit
        if self._user_token_getter is None:
            raise _core.missing_user_token()
        token = self._user_token_getter()
        if inspect.isawaitable(token):
            token = await token
        if not token:
            raise _core.missing_user_token()
        return token

    async def _send(self, call: Call) -> httpx.Response:
        limit = self._settings.max_retries
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    call.method,
                    call.path,
                    params=call.params,
                    json=call.json,
                    content=call.content,
                    headers=call.headers(self._settings),
                )
            except httpx.TransportError as error:
                if not _core.should_retry_error(call, error, attempt, limit):
                    raise _core.transport_error(error) from error
                delay = _core.backoff_delay(attempt, self._settings.backoff)
                log.debug("retrying %s %s after %s", call.method, call.path, type(error).__name__)
            else:
                if not _core.is_custody_refusal(call, response):
                    return response
                if not _core.should_retry_response(call, response, attempt, limit):
                    raise _core.error_for(response)
                delay = _core.backoff_delay(
                    attempt, self._settings.backoff, response.headers.get("retry-after")
                )
                log.debug("retrying %s %s after a 503", call.method, call.path)
            attempt += 1
            await self._sleep(delay)
