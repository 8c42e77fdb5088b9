"""An agent that works for its user at an OAuth provider without ever holding the user's token.

1. It signs the user in through the app's identity provider (`authenticate()`: the browser
   opens, or the URL is printed when there is none).
2. It makes sure the user has connected the provider, sending them through `connect()` when
   they have not.
3. It calls the provider's API through Custody's proxy (`request()`): Custody adds the access
   token, so the agent never sees it.

    CUSTODY_API_KEY=ck_... CUSTODY_URL=https://vault.example.com \\
        python examples/agent.py --provider github --path /user

Against the development fakes of `cargo xtask sdk-env`, `--auto` (or `CUSTODY_EXAMPLE_AUTO=1`)
plays the browser's part itself (see auto_browser.py), so the script runs in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import List, Optional, Set

from custody import Custody, errors


def active_grant_ids(client: Custody, user_token: str, provider: str) -> Set[str]:
    return {
        g.id for g in client.grants(user_token) if g.provider == provider and g.status == "active"
    }


def sign_in(client: Custody, auto_username: Optional[str]) -> str:
    if auto_username is None:
        signed_in = client.authenticate()
    else:
        from auto_browser import sign_in_at_idp

        failures: List[BaseException] = []

        def browser(url: str) -> None:
            def run() -> None:
                try:
                    sign_in_at_idp(url, auto_username)
                except BaseException as failure:  # reported below; the poll then times out
                    failures.append(failure)

            threading.Thread(target=run, daemon=True).start()

        try:
            signed_in = client.authenticate(
                open_browser=False, timeout=60, poll_interval=0.2, on_authorize_url=browser
            )
        except errors.SignInFailed:
            if failures:
                raise RuntimeError(f"the automatic sign-in failed: {failures[0]}") from None
            raise
    print(f"signed in as {signed_in.user.subject} ({signed_in.user.email})")
    return signed_in.user_token


def ensure_connected(
    client: Custody, user_token: str, provider: str, return_url: str, auto: bool
) -> None:
    before = active_grant_ids(client, user_token, provider)
    if before:
        print(f"{provider} is already connected")
        return
    session = client.connect(user_token, provider=provider, return_url=return_url)
    if auto:
        from auto_browser import connect_in_browser

        outcome = connect_in_browser(session.connect_url, return_url)
        if outcome.get("status") != "connected":
            raise RuntimeError(f"connecting {provider} failed: {outcome}")
    else:
        print(f"Connect your {provider} account in a browser:\n  {session.connect_url}")
    deadline = time.monotonic() + 300
    while not active_grant_ids(client, user_token, provider):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{provider} was not connected within five minutes")
        time.sleep(2)
    print(f"{provider} connected")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", default=os.environ.get("CUSTODY_PROVIDER", "github"))
    parser.add_argument("--path", default=os.environ.get("CUSTODY_API_PATH", "/user"))
    parser.add_argument("--return-url", default="https://example.com/connected")
    parser.add_argument(
        "--auto",
        action="store_true",
        default=os.environ.get("CUSTODY_EXAMPLE_AUTO") == "1",
        help="play the browser against the fakes of `cargo xtask sdk-env`",
    )
    parser.add_argument("--username", default="agent-user", help="the fake IdP's user (--auto)")
    args = parser.parse_args(argv)

    with Custody() as client:
        try:
            user_token = sign_in(client, args.username if args.auto else None)
            ensure_connected(client, user_token, args.provider, args.return_url, args.auto)
            answer = client.request(user_token, "GET", args.path, provider=args.provider)
        except errors.CustodyError as error:
            print(f"Custody refused: {error}", file=sys.stderr)
            return 1
    print(f"GET {args.path} at {args.provider}: {answer.status_code}")
    try:
        print(json.dumps(answer.json(), indent=2)[:2000])
    except ValueError:
        print(answer.text[:2000])
    return 0 if answer.is_success else 1


if __name__ == "__main__":
    sys.exit(main())
