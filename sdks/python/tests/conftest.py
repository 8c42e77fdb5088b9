"""Fixtures for the integration tests: the real server with its development fakes, started once
per session by `cargo xtask sdk-env` (Custody on SQLite, a fake OpenID Connect IdP, a fake OAuth
provider `acme` serving an API, and `locked`, a provider whose policy is `proxy_only`).

The fixture runs `$CUSTODY_SDK_ENV_BIN sdk-env` when that variable names a built xtask binary
(CI builds it once), else `cargo run -q -p xtask -- sdk-env` from the repository root. It reads
the one JSON line sdk-env prints, and stops it (stdin EOF, then SIGTERM) at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Optional

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO_ROOT / "sdks" / "python" / "examples"))

# Where connect flows come back to; never opened (the test stops at the redirect to it).
RETURN_URL = "http://127.0.0.1:9/sdk-tests/connected"


@dataclass(frozen=True)
class SdkEnv:
    """What `cargo xtask sdk-env` printed, plus helpers over it."""

    base_url: str
    admin_token: str
    app_id: str
    api_key: str
    idp_issuer: str
    user_token_url: str
    provider: str
    proxy_only_provider: str
    provider_api_path: str

    def user_token(self, sub: str, groups: str = "eng") -> str:
        """A user token signed by the fake IdP (what an app's own sign-in would give it)."""
        params = {"sub": sub, "email": f"{sub}@example.com", "groups": groups}
        answer = httpx.get(self.user_token_url, params=params, timeout=10.0)
        answer.raise_for_status()
        return answer.text.strip()

    def admin(
        self, method: str, path: str, body: Optional[Dict[str, Any]] = None
    ) -> httpx.Response:
        """An operator call (`/v1/apps/{app_id}...`) with the admin token."""
        return httpx.request(
            method,
            f"{self.base_url}/v1/apps/{self.app_id}{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=10.0,
        )


def _command() -> List[str]:
    binary = os.environ.get("CUSTODY_SDK_ENV_BIN")
    if binary:
        return [binary, "sdk-env"]
    return ["cargo", "run", "-q", "-p", "xtask", "--", "sdk-env"]


def _first_line(stream: IO[str], seconds: float) -> Optional[str]:
    lines: List[str] = []
    reader = threading.Thread(target=lambda: lines.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(seconds)
    return lines[0] if lines else None


@pytest.fixture(scope="session")
def sdk_env() -> Iterator[SdkEnv]:
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(
            _command(),
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            assert process.stdout is not None
            # `cargo run` may have to build xtask first.
            line = _first_line(process.stdout, 900.0)
            if not line:
                log.seek(0)
                raise RuntimeError(
                    f"sdk-env printed no settings; its stderr:\n{log.read()[-4000:]}"
                )
            fields = json.loads(line)
            yield SdkEnv(**{name: str(fields[name]) for name in SdkEnv.__dataclass_fields__})
        finally:
            _stop(process)


def _stop(process: subprocess.Popen[str]) -> None:
    """Stdin EOF asks sdk-env to stop; SIGTERM, then SIGKILL, if it does not."""
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(timeout=10)
        return
    except subprocess.TimeoutExpired:
        process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def proxy_route(sdk_env: SdkEnv) -> None:
    """Skips, loudly, the tests that need the proxy route when this build does not serve it."""
    answer = httpx.get(
        f"{sdk_env.base_url}/v1/proxy/{sdk_env.provider}{sdk_env.provider_api_path}",
        headers={
            "Authorization": f"Bearer {sdk_env.api_key}",
            "X-User-Token": sdk_env.user_token("proxy-probe"),
        },
        timeout=10.0,
    )
    is_problem = answer.headers.get("content-type", "").startswith("application/problem+json")
    if is_problem and answer.json().get("code") in ("not_found", "method_not_allowed"):
        pytest.skip(
            "MISSING ROUTE: this build of Custody does not serve /v1/proxy/{provider}/{path} "
            "(issue 14's proxy is not merged yet); the request() tests cannot run"
        )
