"""Unit tests with httpx.MockTransport: what the SDK does on its own side (headers, error
mapping, retries, the sign-in poll loop, the proxy call's shape, redaction). The real server is
covered by test_integration.py."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import webbrowser
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional

import httpx
import pytest

from custody import AsyncCustody, Custody, SignIn, Token, User, __version__, errors
from custody._core import MAX_BACKOFF, backoff_delay
from custody.models import parse_time

API_KEY = "ck_0123456789abcdef_SECRETKEYsecretkeySECRETKEYsecretkeySECRETK"
USER_TOKEN = "eyJhbGciOiJSUzI1NiJ9.USERTOKENPAYLOAD.USERTOKENSIGNATURE"
ACCESS_TOKEN = "gho_ACCESSTOKENSECRET123"
SECRETS = (API_KEY, USER_TOKEN, ACCESS_TOKEN)

ME: Dict[str, Any] = {
    "user_id": "3f1c2a4e-0000-4000-8000-000000000001",
    "subject": "alice",
    "status": "active",
    "email": "alice@example.com",
    "name": "Alice",
    "groups": ["eng"],
    "roles": [],
    "created_at": "2026-11-22T10:00:00Z",
    "last_seen_at": "2026-11-22T10:00:00.123456789Z",
}
GRANT: Dict[str, Any] = {
    "id": "9b2f0000-0000-4000-8000-000000000002",
    "provider": "github",
    "status": "active",
    "scopes": ["repo"],
    "account": "alice-gh",
    "user_id": ME["user_id"],
    "created_at": "2026-11-22T10:00:00Z",
    "updated_at": "2026-11-22T10:00:00Z",
    "last_used_at": None,
    "revoked_at": None,
}


def problem(status: int, code: str, detail: str = "what to do") -> httpx.Response:
    return httpx.Response(
        status,
        json={
            "type": f"urn:custody:error:{code}",
            "status": status,
            "code": code,
            "detail": detail,
        },
        headers={"content-type": "application/problem+json", "x-request-id": "req-123"},
    )


Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler answering from a script, one answer (or exception) per request."""

    def __init__(self, *answers: Any) -> None:
        self.answers: List[Any] = list(answers)
        self.requests: List[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, httpx.Response)
        return answer


def sync_client(handler: Handler, **kwargs: Any) -> Custody:
    client = Custody(
        api_key=API_KEY,
        base_url="http://custody.test",
        transport=httpx.MockTransport(handler),
        **kwargs,
    )
    client._sleep = lambda seconds: None  # no real waiting between retries in unit tests
    return client


def async_client(handler: Handler, **kwargs: Any) -> AsyncCustody:
    client = AsyncCustody(
        api_key=API_KEY,
        base_url="http://custody.test",
        transport=httpx.MockTransport(handler),
        **kwargs,
    )

    async def no_wait(seconds: float) -> None:
        return None

    client._sleep = no_wait
    return client


# -- requests on the wire ---------------------------------------------------------------------


def test_sends_the_api_key_the_user_token_and_the_user_agent() -> None:
    rec = Recorder(httpx.Response(200, json=ME))
    user = sync_client(rec).me(USER_TOKEN)
    sent = rec.requests[0]
    assert (sent.method, sent.url.path) == ("GET", "/v1/me")
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.headers["x-user-token"] == USER_TOKEN
    assert sent.headers["user-agent"] == f"custody-python/{__version__}"
    assert user.id == ME["user_id"]
    assert user.groups == ("eng",)
    assert user.last_seen_at == datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=timezone.utc)


def test_token_sends_provider_or_grant_id_and_nothing_else() -> None:
    answer = {
        "access_token": ACCESS_TOKEN,
        "token_type": "Bearer",
        "expires_at": "2026-11-22T11:00:00Z",
        "grant_id": GRANT["id"],
        "provider": "github",
        "scopes": ["repo"],
    }
    rec = Recorder(httpx.Response(200, json=answer))
    client = sync_client(rec)
    by_provider = client.token(USER_TOKEN, provider="github")
    client.token(USER_TOKEN, grant_id=GRANT["id"])
    assert [json.loads(r.content) for r in rec.requests] == [
        {"provider": "github"},
        {"grant_id": GRANT["id"]},
    ]
    assert by_provider.access_token == ACCESS_TOKEN
    with pytest.raises(ValueError, match="exactly one"):
        client.token(USER_TOKEN)
    with pytest.raises(ValueError, match="exactly one"):
        client.token(USER_TOKEN, provider="github", grant_id=GRANT["id"])


def test_grants_follows_every_page() -> None:
    second = dict(GRANT, id="9b2f0000-0000-4000-8000-000000000003")
    rec = Recorder(
        httpx.Response(200, json={"items": [GRANT], "next_cursor": "c1"}),
        httpx.Response(200, json={"items": [second], "next_cursor": None}),
    )
    grants = sync_client(rec).grants(USER_TOKEN)
    assert [g.id for g in grants] == [GRANT["id"], second["id"]]
    assert "cursor" not in rec.requests[0].url.params
    assert rec.requests[1].url.params["cursor"] == "c1"


def test_ids_cannot_add_path_segments() -> None:
    rec = Recorder(httpx.Response(200, json=dict(GRANT, status="revoked")))
    sync_client(rec).revoke_grant(USER_TOKEN, "../apps")
    assert rec.requests[0].url.raw_path == b"/v1/grants/..%2Fapps"


def test_configuration_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTODY_API_KEY", API_KEY)
    monkeypatch.setenv("CUSTODY_URL", "http://from-env.test/")
    client = Custody()
    assert client.base_url == "http://from-env.test"
    monkeypatch.delenv("CUSTODY_API_KEY")
    with pytest.raises(ValueError, match="CUSTODY_API_KEY"):
        Custody()


# -- error mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (401, "unauthorized", errors.Unauthorized),
        (401, "invalid_user_token", errors.UserTokenInvalid),
        (401, "user_token_missing", errors.UserTokenInvalid),
        (403, "policy_denied", errors.PolicyDenied),
        (403, "user_suspended", errors.UserSuspended),
        (403, "user_deprovisioned", errors.UserDeprovisioned),
        (404, "grant_not_found", errors.NotFound),
        (404, "provider_not_found", errors.NotFound),
        (410, "grant_revoked", errors.GrantRevoked),
        (410, "reauth_required", errors.ReauthRequired),
        (502, "provider_error", errors.ProviderError),
        (503, "service_unavailable", errors.Unavailable),
        (503, "idp_unavailable", errors.Unavailable),
        (403, "handout_disabled", errors.CustodyError),
        (409, "idp_not_configured", errors.CustodyError),
        (400, "invalid_request", errors.CustodyError),
    ],
)
def test_problem_answers_raise_the_class_for_their_code(
    status: int, code: str, cls: type[errors.CustodyError]
) -> None:
    client = sync_client(Recorder(problem(status, code, "the detail")), max_retries=0)
    with pytest.raises(errors.CustodyError) as caught:
        client.me(USER_TOKEN)
    assert type(caught.value) is cls
    assert (caught.value.status, caught.value.code) == (status, code)
    assert caught.value.detail == "the detail"
    assert caught.value.request_id == "req-123"
    assert code in str(caught.value) and "req-123" in str(caught.value)


def test_an_error_without_a_problem_body_still_raises_by_status() -> None:
    client = sync_client(Recorder(httpx.Response(502, text="<html>bad gateway</html>")))
    with pytest.raises(errors.ProviderError) as caught:
        client.grants(USER_TOKEN)
    assert caught.value.code == "http_502"


def test_a_missing_user_token_fails_before_sending() -> None:
    rec = Recorder(httpx.Response(200, json=ME))
    with pytest.raises(errors.UserTokenInvalid) as caught:
        sync_client(rec).me()
    assert caught.value.code == "user_token_missing"
    assert rec.requests == []


# -- retries ----------------------------------------------------------------------------------


def test_idempotent_calls_retry_a_503_then_succeed() -> None:
    rec = Recorder(problem(503, "service_unavailable"), problem(503, "service_unavailable"))
    rec.answers.append(httpx.Response(200, json=ME))
    waits: List[float] = []
    client = sync_client(rec, backoff=0.5)
    client._sleep = waits.append
    assert client.me(USER_TOKEN).subject == "alice"
    assert len(rec.requests) == 3
    assert len(waits) == 2 and 0.25 <= waits[0] <= 0.5 and 0.5 <= waits[1] <= 1.0


def test_retries_stop_after_two() -> None:
    rec = Recorder(problem(503, "service_unavailable"))
    with pytest.raises(errors.Unavailable):
        sync_client(rec).grants(USER_TOKEN)
    assert len(rec.requests) == 3


def test_connection_errors_are_retried_and_end_as_unavailable() -> None:
    rec = Recorder(httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(errors.Unavailable) as caught:
        sync_client(rec).me(USER_TOKEN)
    assert len(rec.requests) == 3
    assert caught.value.status is None
    assert caught.value.code == "connection_error"


def test_a_read_timeout_is_unavailable_and_not_retried() -> None:
    rec = Recorder(httpx.ReadTimeout("timed out"))
    with pytest.raises(errors.Unavailable) as caught:
        sync_client(rec).me(USER_TOKEN)
    assert len(rec.requests) == 1
    assert caught.value.code == "timeout"


def test_non_idempotent_calls_are_never_retried() -> None:
    rec = Recorder(problem(503, "service_unavailable"))
    client = sync_client(rec)
    with pytest.raises(errors.Unavailable):
        client.connect(USER_TOKEN, provider="github", return_url="https://app.test/done")
    assert len(rec.requests) == 1
    rec.answers = [httpx.ConnectError("refused")]
    with pytest.raises(errors.Unavailable):
        client.request(USER_TOKEN, "POST", "/issues", provider="github", json={"t": 1})
    assert len(rec.requests) == 2


def test_other_errors_are_not_retried() -> None:
    rec = Recorder(problem(500, "sealing_error"))
    with pytest.raises(errors.CustodyError):
        sync_client(rec).me(USER_TOKEN)
    assert len(rec.requests) == 1


def test_backoff_grows_honours_retry_after_and_is_capped() -> None:
    assert 0.5 <= backoff_delay(1, 0.5) <= 1.0
    assert 1.0 <= backoff_delay(2, 0.5) <= 2.0
    assert backoff_delay(0, 0.5, "3") == 3.0
    assert backoff_delay(0, 0.5, "3600") == MAX_BACKOFF
    assert backoff_delay(10, 0.5) <= MAX_BACKOFF
    assert backoff_delay(0, 0.5, "not-a-number") <= 0.5


# -- the proxy call ---------------------------------------------------------------------------


def test_request_goes_through_the_proxy_and_returns_upstream_answers() -> None:
    rec = Recorder(
        httpx.Response(404, json={"message": "Not Found"}, headers={"x-custody-proxy": "upstream"})
    )
    response = sync_client(rec).request(
        USER_TOKEN,
        "get",
        "/repos/o/r",
        provider="github",
        params={"per_page": 5},
        headers={"Accept": "application/vnd.github+json"},
        grant_id=GRANT["id"],
    )
    sent = rec.requests[0]
    assert sent.method == "GET"
    assert sent.url.path == "/v1/proxy/github/repos/o/r"
    assert sent.url.params["per_page"] == "5"
    assert sent.headers["accept"] == "application/vnd.github+json"
    assert sent.headers["x-custody-grant-id"] == GRANT["id"]
    assert sent.headers["x-user-token"] == USER_TOKEN
    assert response.status_code == 404
    assert response.json() == {"message": "Not Found"}


def test_request_raises_custodys_own_refusals_and_does_not_retry_upstream_503() -> None:
    client = sync_client(Recorder(problem(410, "grant_revoked")))
    with pytest.raises(errors.GrantRevoked):
        client.request(USER_TOKEN, "GET", "/user", provider="github")
    rec = Recorder(httpx.Response(503, text="busy", headers={"x-custody-proxy": "upstream"}))
    assert (
        sync_client(rec).request(USER_TOKEN, "GET", "/user", provider="github").status_code == 503
    )
    assert len(rec.requests) == 1


@pytest.mark.parametrize("name", ["Authorization", "x-user-token", "Cookie", "X-Custody-Grant-Id"])
def test_request_refuses_headers_custody_owns(name: str) -> None:
    rec = Recorder(httpx.Response(200))
    with pytest.raises(ValueError, match="cannot be set"):
        sync_client(rec).request(USER_TOKEN, "GET", "/", provider="github", headers={name: "x"})
    assert rec.requests == []


@pytest.mark.parametrize("path", ["/../../me", "/a/./b", "..", "/repos/../x?q=1"])
def test_request_refuses_dot_segments_httpx_would_resolve(path: str) -> None:
    rec = Recorder(httpx.Response(200))
    with pytest.raises(ValueError, match="segments"):
        sync_client(rec).request(USER_TOKEN, "GET", path, provider="github")
    assert rec.requests == []


# -- user_token_getter ------------------------------------------------------------------------


def test_a_sync_getter_supplies_the_user_token() -> None:
    rec = Recorder(httpx.Response(200, json=ME))
    client = sync_client(rec, user_token_getter=lambda: USER_TOKEN)
    client.me()
    client.request(None, "GET", "/user", provider="github")
    assert [r.headers["x-user-token"] for r in rec.requests] == [USER_TOKEN, USER_TOKEN]


def test_the_sync_client_refuses_an_async_getter() -> None:
    async def getter() -> str:
        return USER_TOKEN

    with pytest.raises(TypeError, match="AsyncCustody"):
        sync_client(Recorder(httpx.Response(200, json=ME)), user_token_getter=getter).me()


def test_the_async_client_takes_sync_and_async_getters() -> None:
    async def getter() -> str:
        return USER_TOKEN

    async def run() -> None:
        rec = Recorder(httpx.Response(200, json={"items": [GRANT], "next_cursor": None}))
        for g in (getter, lambda: USER_TOKEN):
            async with async_client(rec, user_token_getter=g) as client:
                assert [x.id for x in await client.grants()] == [GRANT["id"]]
        assert [r.headers["x-user-token"] for r in rec.requests] == [USER_TOKEN, USER_TOKEN]

    asyncio.run(run())


def test_the_async_client_retries_and_maps_errors_like_the_sync_one() -> None:
    async def run() -> None:
        rec = Recorder(httpx.ConnectError("refused"), httpx.Response(200, json=ME))
        client = async_client(rec)
        assert (await client.me(USER_TOKEN)).subject == "alice"
        assert len(rec.requests) == 2
        client = async_client(Recorder(problem(403, "policy_denied")))
        with pytest.raises(errors.PolicyDenied):
            await client.token(USER_TOKEN, provider="github")

    asyncio.run(run())


# -- authenticate() ---------------------------------------------------------------------------

SESSION = {
    "session_id": "5e55",
    "authorize_url": "http://idp.test/authorize?state=abc",
    "expires_at": "2026-11-22T10:10:00Z",
}


def session_state(status: str, **extra: Any) -> httpx.Response:
    body: Dict[str, Any] = {"session_id": "5e55", "status": status, "expires_at": "x", **extra}
    return httpx.Response(200, json=body)


def test_authenticate_prints_the_url_headless_and_polls_until_complete(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rec = Recorder(
        httpx.Response(201, json=SESSION),
        session_state("pending"),
        session_state("pending"),
        session_state("complete", user=ME, user_token=USER_TOKEN),
    )
    sign_in = sync_client(rec).authenticate(open_browser=False, poll_interval=0)
    assert sign_in.user_token == USER_TOKEN
    assert sign_in.user.subject == "alice"
    assert [(r.method, r.url.path) for r in rec.requests] == [
        ("POST", "/v1/auth/sessions"),
        ("GET", "/v1/auth/sessions/5e55"),
        ("GET", "/v1/auth/sessions/5e55"),
        ("GET", "/v1/auth/sessions/5e55"),
    ]
    assert "x-user-token" not in rec.requests[0].headers
    assert SESSION["authorize_url"] in capsys.readouterr().err


@pytest.mark.parametrize(
    ("state", "cls", "code"),
    [
        (session_state("failed", error="access_denied"), errors.SignInFailed, "access_denied"),
        (session_state("failed", error="user_suspended"), errors.UserSuspended, "user_suspended"),
        (session_state("expired"), errors.SignInFailed, "session_expired"),
        (session_state("complete", user=ME), errors.SignInFailed, "user_token_already_taken"),
    ],
)
def test_authenticate_raises_when_the_sign_in_ends_without_a_token(
    state: httpx.Response, cls: type[errors.CustodyError], code: str
) -> None:
    seen: List[str] = []
    client = sync_client(Recorder(httpx.Response(201, json=SESSION), state))
    with pytest.raises(cls) as caught:
        client.authenticate(open_browser=False, on_authorize_url=seen.append, poll_interval=0)
    assert caught.value.code == code
    assert seen == [SESSION["authorize_url"]]


def recording_browser(opened: List[str]) -> Callable[[str], bool]:
    def open_url(url: str) -> bool:
        opened.append(url)
        return True

    return open_url


def test_authenticate_opens_the_browser_where_there_is_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    opened: List[str] = []
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(webbrowser, "open", recording_browser(opened))
    done = session_state("complete", user=ME, user_token=USER_TOKEN)
    client = sync_client(Recorder(httpx.Response(201, json=SESSION), done))
    assert client.authenticate(poll_interval=0).user_token == USER_TOKEN
    assert opened == [SESSION["authorize_url"]]
    assert capsys.readouterr().err == ""


def test_authenticate_prints_instead_on_a_linux_box_without_a_display(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    opened: List[str] = []
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(webbrowser, "open", recording_browser(opened))
    done = session_state("complete", user=ME, user_token=USER_TOKEN)
    client = sync_client(Recorder(httpx.Response(201, json=SESSION), done))
    client.authenticate(open_browser=True, poll_interval=0)
    assert opened == []
    assert SESSION["authorize_url"] in capsys.readouterr().err


def test_authenticate_gives_up_after_its_timeout() -> None:
    rec = Recorder(httpx.Response(201, json=SESSION), session_state("pending"))
    with pytest.raises(errors.SignInFailed) as caught:
        sync_client(rec).authenticate(open_browser=False, timeout=0, on_authorize_url=print)
    assert caught.value.code == "sign_in_timeout"


def test_async_authenticate_polls_until_complete() -> None:
    async def run() -> SignIn:
        rec = Recorder(
            httpx.Response(201, json=SESSION),
            session_state("pending"),
            session_state("complete", user=ME, user_token=USER_TOKEN),
        )
        client = async_client(rec)
        return await client.authenticate(
            open_browser=False, poll_interval=0, on_authorize_url=lambda url: None
        )

    assert asyncio.run(run()).user_token == USER_TOKEN


# -- no secret in a message, a repr or a log line ---------------------------------------------


def test_no_secret_in_errors_reprs_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: List[str] = []
    token_answer = {
        "access_token": ACCESS_TOKEN,
        "token_type": "Bearer",
        "expires_at": None,
        "grant_id": GRANT["id"],
        "provider": "github",
        "scopes": [],
    }
    failures: List[Optional[Any]] = [
        problem(401, "invalid_user_token", "signature does not verify"),
        problem(503, "service_unavailable"),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("timed out"),
        httpx.Response(500, text="oops"),
    ]
    for failure in failures:
        client = sync_client(Recorder(failure))
        seen.append(repr(client))
        with pytest.raises(errors.CustodyError) as caught:
            client.token(USER_TOKEN, provider="github")
        seen += [str(caught.value), repr(caught.value), repr(caught.value.__cause__)]
    client = sync_client(Recorder(httpx.Response(200, json=token_answer)))
    token: Token = client.token(USER_TOKEN, provider="github")
    seen += [repr(token), str(token), repr(SignIn(user_token=USER_TOKEN, user=User.from_json(ME)))]
    seen.append(repr(client._settings))
    seen.append(caplog.text)
    text = "\n".join(seen)
    assert "Token(" in text and "invalid_user_token" in text  # the texts were produced
    for secret in SECRETS:
        assert secret not in text


def test_an_answer_of_the_wrong_shape_is_a_custody_error() -> None:
    with pytest.raises(errors.CustodyError) as caught:
        sync_client(Recorder(httpx.Response(200, json={"user_id": "x"}))).me(USER_TOKEN)
    assert caught.value.code == "invalid_response"


def test_parse_time_accepts_rfc3339_forms() -> None:
    utc = timezone.utc
    assert parse_time("2026-11-22T10:00:00Z") == datetime(2026, 11, 22, 10, 0, tzinfo=utc)
    assert parse_time("2026-11-22T12:00:00.5+02:00") == datetime(
        2026, 11, 22, 10, 0, 0, 500000, tzinfo=utc
    )
    assert parse_time(None) is None
