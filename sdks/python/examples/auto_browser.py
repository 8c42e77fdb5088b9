"""Plays the user's browser against the development fakes of `cargo xtask sdk-env` (its fake
identity provider and fake OAuth provider), so the example and the tests run unattended.

Only for those fakes: a real IdP wants a real person at a real browser. The steps are those
xtask/src/sdk_env.rs documents: the fake IdP's login page is a form with hidden fields, a
`username` field and a `Sign in` button (`action=sign-in`); the fake OAuth provider consents at
once and redirects back; Custody's cookies are kept from one step to the next.
"""

from __future__ import annotations

import html
import re
from typing import Dict, Optional
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import httpx

_FORM_ACTION = re.compile(r'<form[^>]*action="([^"]*)"', re.IGNORECASE)
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', re.IGNORECASE)


def sign_in_at_idp(authorize_url: str, username: str) -> None:
    """Opens `authorize_url` (from `authenticate()`; Custody redirects it to the IdP), submits the
    IdP's login form as `username`, and follows the IdP's redirect to Custody's callback, which
    completes the sign-in session. One client throughout: Custody's cookies must come back."""
    with httpx.Client(follow_redirects=True, timeout=10.0) as browser:
        page = browser.get(authorize_url)
        if page.status_code != 200:
            raise RuntimeError(f"the IdP's login page answered {page.status_code}")
        action = _FORM_ACTION.search(page.text)
        if action is None:
            raise RuntimeError("the IdP's login page has no form")
        fields = {name: html.unescape(value) for name, value in _HIDDEN.findall(page.text)}
        fields.update(username=username, action="sign-in")
        target = urljoin(str(page.url), html.unescape(action.group(1)))
        done = browser.post(target, data=fields)
        if done.status_code != 200:
            raise RuntimeError(f"Custody's sign-in callback answered {done.status_code}")


def connect_in_browser(
    connect_url: str, return_url: str, provider_login: Optional[str] = None
) -> Dict[str, str]:
    """Follows `connect_url` (from `connect()`) through the provider's consent back to
    `return_url`, without opening it; returns the query Custody put on it (`status`,
    `grant_id` or `error`). `provider_login` names the account at the fake provider (its
    `login` parameter; `fake-user` otherwise). One client throughout: Custody's connect cookie
    must come back to its callback."""
    target = urlsplit(return_url)
    custody = urlsplit(connect_url).netloc
    url = connect_url
    with httpx.Client(follow_redirects=False, timeout=10.0) as browser:
        for _ in range(10):
            here = urlsplit(url)
            if (here.scheme, here.netloc, here.path) == (target.scheme, target.netloc, target.path):
                return dict(parse_qsl(here.query))
            if provider_login and here.netloc != custody and here.path.endswith("/authorize"):
                url += "&" + urlencode({"login": provider_login})
            answer = browser.get(url)
            location = answer.headers.get("location")
            if answer.status_code not in (301, 302, 303, 307) or not location:
                raise RuntimeError(f"{here.path} answered {answer.status_code}, not a redirect")
            url = urljoin(url, location)
    raise RuntimeError("too many redirects while connecting")
