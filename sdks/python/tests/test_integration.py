"""The SDK against the real server (`cargo xtask sdk-env`): every call, both clients, the error
classes as Custody really answers them, authenticate() headless, connect + the proxy, and
`proxy_only` grants. Browser steps are played with plain HTTP (examples/auto_browser.py)."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import threading
import uuid
from typing import Callable, Iterator, List, Optional

import pytest

from auto_browser import connect_in_browser, sign_in_at_idp
from conftest import RETURN_URL, SdkEnv
from custody import AsyncCustody, Custody, errors


@pytest.fixture
def client(sdk_env: SdkEnv) -> Iterator[Custody]:
    with Custody(api_key=sdk_env.api_key, base_url=sdk_env.base_url) as c:
        yield c


def fresh_user() -> str:
    """A subject no other test uses, so each test starts without grants."""
    return f"u-{uuid.uuid4().hex[:12]}"


def connect(client: Custody, user_token: str, provider: str, login: Optional[str] = None) -> str:
    """Connects `provider` for the user the way a browser would (as the provider account
    `login`); returns the grant id."""
    session = client.connect(user_token, provider=provider, return_url=RETURN_URL)
    outcome = connect_in_browser(session.connect_url, RETURN_URL, login)
    assert outcome.get("status") == "connected", outcome
    return outcome["grant_id"]


def browser_signing_in_as(username: str, failures: List[BaseException]) -> Callable[[str], None]:
    """An `on_authorize_url` that signs in at the fake IdP from another thread, as a person at
    a browser would while authenticate() polls."""

    def open_url(url: str) -> None:
        def run() -> None:
            try:
                sign_in_at_idp(url, username)
            except BaseException as failure:
                failures.append(failure)

        threading.Thread(target=run, daemon=True).start()

    return open_url


# -- authenticate() ---------------------------------------------------------------------------


class _UrlWatcher:
    """Stands in for stderr: when authenticate() prints the sign-in URL, a "person" (a thread)
    opens it and signs in."""

    def __init__(self, username: str, failures: List[BaseException]) -> None:
        self.text = ""
        self.browser = browser_signing_in_as(username, failures)

    def write(self, chunk: str) -> int:
        self.text += chunk
        found = re.search(r"https?://\S+", chunk)
        if found:
            self.browser(found.group(0))
        return len(chunk)

    def flush(self) -> None:
        return None


def test_authenticate_headless_prints_the_url_and_returns_a_working_user_token(
    client: Custody, monkeypatch: pytest.MonkeyPatch
) -> None:
    username = fresh_user()
    failures: List[BaseException] = []
    watcher = _UrlWatcher(username, failures)
    monkeypatch.setattr(sys, "stderr", watcher)
    sign_in = client.authenticate(open_browser=False, timeout=30, poll_interval=0.1)
    monkeypatch.undo()
    assert failures == []
    assert "open this URL in a browser" in watcher.text
    assert sign_in.user.subject == username
    assert sign_in.user.status == "active"
    assert sign_in.user_token.count(".") == 2  # a JWT: the sign-in's ID token
    assert sign_in.user_token not in repr(sign_in)
    me = client.me(sign_in.user_token)
    assert (me.id, me.subject, me.email) == (sign_in.user.id, username, f"{username}@example.com")


def test_async_authenticate(sdk_env: SdkEnv) -> None:
    username = fresh_user()
    failures: List[BaseException] = []

    async def run() -> None:
        async with AsyncCustody(api_key=sdk_env.api_key, base_url=sdk_env.base_url) as c:
            sign_in = await c.authenticate(
                open_browser=False,
                timeout=30,
                poll_interval=0.1,
                on_authorize_url=browser_signing_in_as(username, failures),
            )
            assert sign_in.user.subject == username
            assert (await c.me(sign_in.user_token)).id == sign_in.user.id

    asyncio.run(run())
    assert failures == []


def test_authenticate_times_out_when_nobody_signs_in(client: Custody) -> None:
    with pytest.raises(errors.SignInFailed) as caught:
        client.authenticate(
            open_browser=False, timeout=0.3, poll_interval=0.1, on_authorize_url=lambda url: None
        )
    assert caught.value.code == "sign_in_timeout"


# -- the calls, sync ----------------------------------------------------------------------------


def test_me_token_grants_connect_revoke(sdk_env: SdkEnv, client: Custody) -> None:
    username = fresh_user()
    user_token = sdk_env.user_token(username)

    me = client.me(user_token)
    assert (me.subject, me.status, me.groups) == (username, "active", ("eng",))
    assert client.grants(user_token) == []

    session = client.connect(user_token, provider=sdk_env.provider, return_url=RETURN_URL)
    assert session.connect_url.startswith(sdk_env.base_url)
    assert session.expires_at.tzinfo is not None
    outcome = connect_in_browser(session.connect_url, RETURN_URL)
    assert outcome["status"] == "connected", outcome
    grant_id = outcome["grant_id"]

    grants = client.grants(user_token)
    assert [(g.id, g.provider, g.status, g.user_id) for g in grants] == [
        (grant_id, sdk_env.provider, "active", me.id)
    ]

    by_provider = client.token(user_token, provider=sdk_env.provider)
    by_grant = client.token(user_token, grant_id=grant_id)
    assert by_provider.grant_id == by_grant.grant_id == grant_id
    assert by_provider.provider == sdk_env.provider
    assert by_provider.access_token and by_provider.access_token == by_grant.access_token
    assert by_provider.access_token not in repr(by_provider)

    revoked = client.revoke_grant(user_token, grant_id)
    assert (revoked.id, revoked.status) == (grant_id, "revoked")
    assert revoked.revoked_at is not None
    with pytest.raises(errors.GrantRevoked) as caught:
        client.token(user_token, grant_id=grant_id)
    assert (caught.value.status, caught.value.code) == (410, "grant_revoked")
    assert caught.value.request_id


def test_a_user_token_getter_stands_in_for_the_token(sdk_env: SdkEnv) -> None:
    username = fresh_user()
    user_token = sdk_env.user_token(username)
    calls: List[int] = []

    def current_user_token() -> str:
        calls.append(1)
        return user_token

    with Custody(
        api_key=sdk_env.api_key, base_url=sdk_env.base_url, user_token_getter=current_user_token
    ) as c:
        assert c.me().subject == username
        grant_id = connect(c, user_token, sdk_env.provider)
        assert [g.id for g in c.grants()] == [grant_id]
        assert c.token(provider=sdk_env.provider).grant_id == grant_id
        assert c.revoke_grant(None, grant_id).status == "revoked"
    assert len(calls) == 4


# -- the calls, async ---------------------------------------------------------------------------


def test_the_async_client_covers_every_call(sdk_env: SdkEnv) -> None:
    username = fresh_user()
    user_token = sdk_env.user_token(username)

    async def getter() -> str:
        return user_token

    async def run() -> None:
        async with AsyncCustody(
            api_key=sdk_env.api_key, base_url=sdk_env.base_url, user_token_getter=getter
        ) as c:
            assert (await c.me()).subject == username
            session = await c.connect(provider=sdk_env.provider, return_url=RETURN_URL)
            # the browser's part is blocking HTTP; run it off the event loop
            outcome = await asyncio.get_running_loop().run_in_executor(
                None, connect_in_browser, session.connect_url, RETURN_URL, username
            )
            grant_id = outcome["grant_id"]
            assert [g.id for g in await c.grants()] == [grant_id]
            token = await c.token(grant_id=grant_id)
            assert (token.provider, token.grant_id) == (sdk_env.provider, grant_id)
            assert (await c.revoke_grant(None, grant_id)).status == "revoked"
            with pytest.raises(errors.GrantRevoked):
                await c.token(grant_id=grant_id)
            with pytest.raises(errors.NotFound):
                await c.token(grant_id=str(uuid.uuid4()))

    asyncio.run(run())


def test_the_async_client_goes_through_the_proxy(sdk_env: SdkEnv, proxy_route: None) -> None:
    username = fresh_user()
    user_token = sdk_env.user_token(username)
    with Custody(api_key=sdk_env.api_key, base_url=sdk_env.base_url) as sync:
        grant_id = connect(sync, user_token, sdk_env.provider, login=username)

    async def run() -> None:
        async with AsyncCustody(api_key=sdk_env.api_key, base_url=sdk_env.base_url) as c:
            path, provider = sdk_env.provider_api_path, sdk_env.provider
            answer = await c.request(user_token, "GET", path, provider=provider)
            assert answer.status_code == 200
            assert answer.headers["x-custody-proxy"] == "upstream"
            assert answer.json()["login"] == username
            await c.revoke_grant(user_token, grant_id)
            with pytest.raises(errors.GrantRevoked):
                await c.request(user_token, "GET", path, provider=provider, grant_id=grant_id)

    asyncio.run(run())


# -- the proxy --------------------------------------------------------------------------------


def test_request_calls_the_provider_api_as_the_user(
    sdk_env: SdkEnv, client: Custody, proxy_route: None
) -> None:
    username = fresh_user()
    user_token = sdk_env.user_token(username)
    grant_id = connect(client, user_token, sdk_env.provider, login=username)

    answer = client.request(user_token, "GET", sdk_env.provider_api_path, provider=sdk_env.provider)
    assert answer.status_code == 200
    assert answer.headers["x-custody-proxy"] == "upstream"
    assert answer.headers["x-custody-grant-id"] == grant_id
    assert answer.json()["login"] == username

    pinned = client.request(
        user_token, "GET", sdk_env.provider_api_path, provider=sdk_env.provider, grant_id=grant_id
    )
    assert pinned.status_code == 200

    # Encoded dot segments reach Custody, which refuses to leave the provider's API base.
    with pytest.raises(errors.CustodyError) as caught:
        client.request(user_token, "GET", "/%2e%2e/%2e%2e/v1/apps", provider=sdk_env.provider)
    assert (caught.value.status, caught.value.code) == (400, "invalid_proxy_path")


def test_proxy_only_grants_never_hand_out_the_token(sdk_env: SdkEnv, client: Custody) -> None:
    user_token = sdk_env.user_token(fresh_user())
    grant_id = connect(client, user_token, sdk_env.proxy_only_provider)
    with pytest.raises(errors.CustodyError) as by_provider:
        client.token(user_token, provider=sdk_env.proxy_only_provider)
    with pytest.raises(errors.CustodyError) as by_grant:
        client.token(user_token, grant_id=grant_id)
    for caught in (by_provider, by_grant):
        assert type(caught.value) is errors.CustodyError
        assert (caught.value.status, caught.value.code) == (403, "handout_disabled")


def test_proxy_only_grants_work_through_request_but_never_hand_out_the_token(
    sdk_env: SdkEnv, client: Custody, proxy_route: None
) -> None:
    username = fresh_user()
    user_token = sdk_env.user_token(username)
    grant_id = connect(client, user_token, sdk_env.proxy_only_provider, login=username)

    with pytest.raises(errors.CustodyError) as by_provider:
        client.token(user_token, provider=sdk_env.proxy_only_provider)
    with pytest.raises(errors.CustodyError) as by_grant:
        client.token(user_token, grant_id=grant_id)
    for caught in (by_provider, by_grant):
        assert (caught.value.status, caught.value.code) == (403, "handout_disabled")

    answer = client.request(
        user_token, "GET", sdk_env.provider_api_path, provider=sdk_env.proxy_only_provider
    )
    assert answer.status_code == 200
    assert answer.json()["login"] == username


# -- errors as Custody really answers them ----------------------------------------------------


def test_a_wrong_api_key_is_unauthorized(sdk_env: SdkEnv) -> None:
    wrong = "ck_0000000000000000_" + "A" * 43
    with (
        Custody(api_key=wrong, base_url=sdk_env.base_url) as c,
        pytest.raises(errors.Unauthorized) as caught,
    ):
        c.me(sdk_env.user_token(fresh_user()))
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    assert wrong not in str(caught.value)


def test_a_bad_user_token_is_user_token_invalid(sdk_env: SdkEnv, client: Custody) -> None:
    token = sdk_env.user_token(fresh_user())
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(errors.UserTokenInvalid) as caught:
        client.me(tampered)
    assert (caught.value.status, caught.value.code) == (401, "invalid_user_token")
    assert tampered not in str(caught.value) and tampered not in repr(caught.value)


def test_an_unknown_grant_is_not_found(sdk_env: SdkEnv, client: Custody) -> None:
    user_token = sdk_env.user_token(fresh_user())
    with pytest.raises(errors.NotFound) as caught:
        client.token(user_token, grant_id=str(uuid.uuid4()))
    assert (caught.value.status, caught.value.code) == (404, "grant_not_found")
    with pytest.raises(errors.NotFound):
        client.revoke_grant(user_token, str(uuid.uuid4()))


def test_a_policy_that_excludes_the_user_is_policy_denied(sdk_env: SdkEnv, client: Custody) -> None:
    # A provider of its own, so the shared ones keep their policies.
    template = sdk_env.admin("GET", f"/providers/{sdk_env.provider}").json()
    provider = f"denied-{uuid.uuid4().hex[:8]}"
    body = {
        "authorization_url": template["authorization_url"],
        "token_url": template["token_url"],
        "client_id": template["client_id"],
        "client_secret": "not-used-by-this-test",
    }
    assert sdk_env.admin("PUT", f"/providers/{provider}", body).status_code == 200
    policy = {"allow_groups": ["nobody-has-this-group"], "allow_roles": []}
    assert sdk_env.admin("PUT", f"/policies/{provider}", policy).status_code == 200
    try:
        user_token = sdk_env.user_token(fresh_user())
        with pytest.raises(errors.PolicyDenied) as caught:
            client.connect(user_token, provider=provider, return_url=RETURN_URL)
        assert (caught.value.status, caught.value.code) == (403, "policy_denied")
    finally:
        sdk_env.admin("DELETE", f"/providers/{provider}")


def test_no_server_is_unavailable() -> None:
    with (
        Custody(api_key="ck_x", base_url="http://127.0.0.1:9", backoff=0.01) as c,
        pytest.raises(errors.Unavailable) as caught,
    ):
        c.me("a-token")
    assert (caught.value.status, caught.value.code) == (None, "connection_error")


def test_no_secret_reaches_a_log_line(
    sdk_env: SdkEnv, client: Custody, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    user_token = sdk_env.user_token(fresh_user())
    connect(client, user_token, sdk_env.provider)
    access_token = client.token(user_token, provider=sdk_env.provider).access_token
    client.grants(user_token)
    with pytest.raises(errors.NotFound):
        client.token(user_token, grant_id=str(uuid.uuid4()))
    assert "HTTP Request" in caplog.text  # httpx logged the calls
    for secret in (sdk_env.api_key, user_token, access_token):
        assert secret not in caplog.text
