#!/usr/bin/env bash
# Schemathesis (from PyPI) against a running Custody with docs/openapi.json: fails on any server
# error (5xx) and on any answer whose status code, content type, headers or body break the
# document.
#
# What it does:
#   1. installs schemathesis (pinned) and openapi-spec-validator into a venv under target/, and
#      validates docs/openapi.json as OpenAPI 3.1;
#   2. builds the `custody` binary and `xtask` (for its development identity provider);
#   3. moves into a private network namespace (only loopback), so nothing the fuzzer makes
#      Custody fetch (issuer URLs, provider token and revocation URLs) can leave the machine;
#   4. starts the development IdP (a free port) and Custody (127.0.0.1:8080 inside the namespace,
#      where the IdP's sign-in client expects it; temporary SQLite data dir, admin token set,
#      insecure issuers allowed), and seeds:
#        - app O, the operator endpoints' target: the IdP, provider `github` with a policy, a
#          second API key, and an imported grant of user `alice`;
#        - app D, which `DELETE /v1/apps/{app_id}` deletes;
#        - app R, the runtime endpoints' app: the IdP, an OIDC client, providers `github` and
#          `slack`, alice's grants of both and a user token for her; alice then signs in through
#          the browser flows (the IdP's login form), once for an SDK session and once for the
#          Wallet, whose session cookie and CSRF token the run uses;
#   5. runs schemathesis on every operation of the document (examples, coverage and fuzzing
#      phases; positive and negative data) with the credentials per security scheme (admin
#      token, API key, user token, Wallet cookie) and the seeded ids as path parameters, and
#      checks not_a_server_error, status_code_conformance, content_type_conformance,
#      response_headers_conformance and response_schema_conformance. Exits non-zero on any
#      failure.
#
# Every operation is exercised. Five are reached only on their refusal paths, which still
# checks that they answer as documented and never with a 5xx: the webhook receiver (the secret
# changes as the run enables and rotates it; signed deliveries are tests/tests/webhooks_http.rs),
# the two OIDC callbacks and the two connect legs (their states are single-use values minted by
# a browser flow; the whole flows are tests/tests/signin_http.rs, wallet_browser.rs and
# vault_http.rs).
#
# The proxy (`/v1/proxy/...`) is left out: its answers are the provider's (any status, any media
# type), and inside the network-less namespace every provider is unreachable, so it can only
# answer 502 `provider_error`, which `not_a_server_error` counts as a failure. Its behaviour is
# tests/tests/proxy_http.rs, against the fake provider's API.
#
# Environment: SCHEMATHESIS_MAX_EXAMPLES (default 50), SCHEMATHESIS_SEED (default fixed, for
# reproducible runs), SCHEMATHESIS_WORKERS (default 2). Arguments are passed on to
# `schemathesis run`, e.g. `.ci/schemathesis.sh --include-path-regex '^/v1/apps'`.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
OPENAPI_SPEC_VALIDATOR_VERSION=0.9.0
WORK="target/schemathesis"
VENV="$WORK/venv"

log() { printf '\n== %s\n' "$*"; }

if [ -z "${SCHEMATHESIS_IN_NETNS:-}" ]; then
  log "schemathesis $SCHEMATHESIS_VERSION"
  mkdir -p "$WORK"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  if [ "$("$VENV/bin/schemathesis" --version 2>/dev/null || true)" != "schemathesis, version $SCHEMATHESIS_VERSION" ] \
    || ! "$VENV/bin/python" -c 'import openapi_spec_validator' 2>/dev/null; then
    "$VENV/bin/pip" install -q --disable-pip-version-check \
      "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION"
  fi
  "$VENV/bin/schemathesis" --version

  log "docs/openapi.json is valid OpenAPI 3.1"
  "$VENV/bin/openapi-spec-validator" docs/openapi.json

  log "build custody and xtask"
  cargo build -q -p custody-server --bin custody
  cargo build -q -p xtask

  log "into a private network namespace (loopback only)"
  if ! unshare --net true 2>/dev/null; then
    echo "schemathesis.sh: cannot create a network namespace (needs root or CAP_SYS_ADMIN); refusing to fuzz" >&2
    echo "a server that would fetch whatever URLs the fuzzer invents" >&2
    exit 1
  fi
  exec unshare --net env SCHEMATHESIS_IN_NETNS=1 bash "$0" "$@"
fi

# ---- inside the namespace
ip link set lo up
target_dir=$(cargo metadata --format-version 1 --no-deps --offline \
  | "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
CUSTODY_BIN="$target_dir/debug/custody"
XTASK_BIN="$target_dir/debug/xtask"

tmp=$(mktemp -d)
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ]; then
    echo "--- custody log (last 40 lines)"
    tail -n 40 "$tmp/custody.log" 2>/dev/null || true
  fi
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT

free_port() {
  "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_for() {
  for _ in $(seq 1 100); do
    "$VENV/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1" \
      2>/dev/null && return 0
    sleep 0.2
  done
  echo "schemathesis.sh: $1 did not come up" >&2
  return 1
}

log "development identity provider and custody"
idp_port=$(free_port)
"$XTASK_BIN" dev-idp --listen "127.0.0.1:$idp_port" >"$tmp/idp.log" 2>&1 &
pids+=($!)
# The development IdP registers its sign-in client for a Custody at 127.0.0.1:8080; the port is
# free in this namespace whatever runs outside it.
custody_port=8080
export ST_IDP="http://127.0.0.1:$idp_port"
export ST_BASE="http://127.0.0.1:$custody_port"
export ST_ADMIN_TOKEN="schemathesis-admin-token-$(date +%s)-$RANDOM"
# A clean environment: no CUSTODY_* setting of the caller's (a database URL, master keys) applies.
env -i PATH="$PATH" HOME="${HOME:-/tmp}" \
  CUSTODY_LISTEN="127.0.0.1:$custody_port" \
  CUSTODY_DATA_DIR="$tmp/data" \
  CUSTODY_ADMIN_TOKEN="$ST_ADMIN_TOKEN" \
  CUSTODY_ALLOW_INSECURE_ISSUERS=true \
  CUSTODY_LOG="${CUSTODY_LOG:-warn}" \
  "$CUSTODY_BIN" >"$tmp/custody.log" 2>&1 &
pids+=($!)
wait_for "$ST_IDP/.well-known/openid-configuration"
wait_for "$ST_BASE/readyz"
echo "custody at $ST_BASE, identity provider at $ST_IDP"

log "seed"
"$VENV/bin/python" - >"$tmp/seed.env" <<'PY'
import html, http.client, json, os, re, sys, urllib.error, urllib.parse, urllib.request

BASE, IDP, ADMIN = os.environ["ST_BASE"], os.environ["ST_IDP"], os.environ["ST_ADMIN_TOKEN"]

def call(method, path, body=None, token=ADMIN, user=None, base=BASE, raw=False):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if user:
        request.add_header("X-User-Token", user)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as e:
        sys.exit(f"seed: {method} {path}: {e.code} {e.read().decode()}")
    return text if raw else (json.loads(text) if text else None)

idp = {"issuer_url": IDP, "audience": "custody-tests", "claims": {"group": "groups"}}
github = {"preset": "github", "client_id": "demo-client", "client_secret": "demo-secret"}
slack = {"preset": "slack", "client_id": "demo-client", "client_secret": "demo-secret"}

# App O: the operator endpoints' target.
o = call("POST", "/v1/apps", {"name": "Operator playground"})["id"]
call("POST", f"/v1/apps/{o}/identity-provider", idp)
call("PUT", f"/v1/apps/{o}/providers/github", github)
call("PUT", f"/v1/apps/{o}/policies/github", {"allow_groups": ["eng"]})
key = call("POST", f"/v1/apps/{o}/api-keys")["id"]
grant = call("POST", f"/v1/apps/{o}/grants",
             {"subject": "alice", "provider": "github", "access_token": "gho_operator", "scopes": ["repo"]})

# App D: deleted by `DELETE /v1/apps/{app_id}`.
d = call("POST", "/v1/apps", {"name": "Deleted by the run"})["id"]

# App R: the runtime endpoints' app, with a signed-in user.
created = call("POST", "/v1/apps", {"name": "Runtime"})
r, api_key = created["id"], created["api_key"]
call("POST", f"/v1/apps/{r}/identity-provider", idp)
call("PUT", f"/v1/apps/{r}/identity-provider/oidc", {"client_id": "custody-dev", "client_secret": "custody-dev-secret"})
call("PUT", f"/v1/apps/{r}/providers/github", github)
call("PUT", f"/v1/apps/{r}/providers/slack", slack)
query = urllib.parse.urlencode({"sub": "alice", "email": "alice@example.com", "name": "Alice", "groups": "eng"})
user_token = call("GET", f"/dev/token?{query}", token=None, base=IDP, raw=True).strip()
me = call("GET", "/v1/me", token=api_key, user=user_token)
call("POST", f"/v1/apps/{r}/grants",
     {"user_id": me["user_id"], "provider": "github", "access_token": "gho_runtime", "scopes": ["repo"]})
slack_grant = call("POST", f"/v1/apps/{r}/grants",
                   {"user_id": me["user_id"], "provider": "slack", "access_token": "xoxp-runtime"})["id"]

# Alice signs in through the browser flows, as a person would at the development IdP's login
# form: an SDK sign-in (completed, so its first read hands the user token out) and the Wallet
# (its session cookie and CSRF token).
def fetch(method, url, headers=None, body=None):
    """One request, redirects not followed: (status, Location, Set-Cookie values, text)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=body, headers=headers or {})
    response = connection.getresponse()
    text = response.read().decode(errors="replace")
    return response.status, response.getheader("Location"), response.headers.get_all("Set-Cookie") or [], text

def expect(what, status, got):
    if got[0] != status:
        sys.exit(f"seed: {what}: expected {status}, got {got[0]}: {got[3][:500]}")
    return got

def hidden_inputs(page):
    return {n: html.unescape(v) for n, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page)}

def log_in_at_idp(authorize_url):
    """The IdP's login form for alice; returns its redirect to Custody's callback."""
    form = expect("IdP login form", 200, fetch("GET", authorize_url))
    fields = dict(hidden_inputs(form[3]), username="alice", action="sign-in")
    submitted = fetch("POST", f"{IDP}/authorize", {"Content-Type": "application/x-www-form-urlencoded"},
                      urllib.parse.urlencode(fields))
    return expect("IdP login", 302, submitted)[1]

def cookie(set_cookies, name):
    for value in set_cookies:
        pair = value.split(";", 1)[0]
        if pair.startswith(f"{name}="):
            return pair[len(name) + 1:]
    sys.exit(f"seed: no `{name}` cookie in {set_cookies}")

session = call("POST", "/v1/auth/sessions", {}, token=api_key)
expect("SDK sign-in callback", 200, fetch("GET", log_in_at_idp(session["authorize_url"])))
login = expect("Wallet login", 302, fetch("GET", f"{BASE}/wallet/login?app_id={r}"))
binding = cookie(login[2], "custody_wallet_signin")
callback = expect("Wallet callback", 303, fetch("GET", log_in_at_idp(login[1]), {"Cookie": f"custody_wallet_signin={binding}"}))
wallet_session = cookie(callback[2], "custody_wallet")
wallet = expect("Wallet page", 200, fetch("GET", f"{BASE}/wallet", {"Cookie": f"custody_wallet={wallet_session}"}))
csrf = hidden_inputs(wallet[3])["csrf"]

for name, value in {
    "ST_APP": o, "ST_DELETE_APP": d, "ST_KEY_ID": key, "ST_USER_ID": grant["user_id"], "ST_GRANT_ID": grant["id"],
    "ST_RUNTIME_APP": r, "ST_API_KEY": api_key, "ST_USER_TOKEN": user_token,
    "ST_RUNTIME_GRANT_ID": slack_grant, "ST_SESSION_ID": session["session_id"],
    "ST_WALLET_SESSION": wallet_session, "ST_WALLET_CSRF": csrf,
}.items():
    print(f"export {name}='{value}'")
PY
# shellcheck disable=SC1091
. "$tmp/seed.env"
echo "operator app $ST_APP, runtime app $ST_RUNTIME_APP"

cat >"$tmp/schemathesis.toml" <<'TOML'
# Credentials per security scheme of docs/openapi.json (`${VAR}` is read from the environment).
[auth.openapi.AdminToken]
bearer = "${ST_ADMIN_TOKEN}"

[auth.openapi.ApiKey]
bearer = "${ST_API_KEY}"

[auth.openapi.UserToken]
api_key = "${ST_USER_TOKEN}"

[auth.openapi.WalletSession]
api_key = "${ST_WALLET_SESSION}"

# Seeded ids, so the operations reach real resources and not only their 404s.
[parameters]
"path.app_id" = "${ST_APP}"
"path.provider" = "github"
"path.user_id" = "${ST_USER_ID}"
"path.grant_id" = "${ST_GRANT_ID}"
"path.key_id" = "${ST_KEY_ID}"
"path.session_id" = "${ST_SESSION_ID}"
"query.app_id" = "${ST_RUNTIME_APP}"

# Per operation, by operation id (`include-path` and `include-method` in one entry would match
# either).
[[operations]]
include-operation-id = "deleteApp"
parameters = { "path.app_id" = "${ST_DELETE_APP}" }

[[operations]]
include-operation-id = "revokeMyGrant"
parameters = { "path.grant_id" = "${ST_RUNTIME_GRANT_ID}" }

# The Wallet's revoke form with the session's CSRF token; sign-out keeps generated (wrong) ones,
# so the session lives through the run.
[[operations]]
include-operation-id = "walletRevoke"
parameters = { "path.grant_id" = "${ST_RUNTIME_GRANT_ID}", "body.csrf" = "${ST_WALLET_CSRF}" }

# Discovery against the development identity provider (anything else fails in the namespace).
[[operations]]
include-operation-id = ["discoverIdp", "createIdp"]
parameters = { "body.issuer_url" = "${ST_IDP}" }
TOML
# Schemathesis keeps crashes for `schemathesis replay` in a cache, and the examples that failed in
# a database (`--generation-database`): both under target/, not in the tree.
printf '\n[cache]\ndirectory = "%s"\n' "$PWD/$WORK/cache" >>"$tmp/schemathesis.toml"

log "schemathesis run"
export HYPOTHESIS_STORAGE_DIRECTORY="$PWD/$WORK/hypothesis"
set +e
"$VENV/bin/schemathesis" --config-file "$tmp/schemathesis.toml" run docs/openapi.json \
  --url "$ST_BASE" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}" \
  --seed "${SCHEMATHESIS_SEED:-20261122}" \
  --workers "${SCHEMATHESIS_WORKERS:-2}" \
  --request-timeout 20 \
  --max-redirects 0 \
  --generation-database "$PWD/$WORK/examples" \
  --exclude-path-regex '^/v1/proxy/' \
  --no-color \
  --report junit --report-junit-path "$tmp/junit.xml" \
  "$@"
status=$?
set -e
# A plain closing line, for whoever reads the end of the CI log.
"$VENV/bin/python" - "$tmp/junit.xml" "$status" <<'PY' || true
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
tests = sum(int(s.get("tests", 0)) for s in suites)
failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
print(f"schemathesis: {tests - failed} passed, {failed} failed")
PY
exit "$status"
