#!/usr/bin/env bash
# The Python SDK's checks (issue 14): a venv in target/sdk-python with `pip install
# ./sdks/python[dev]` (the package as users install it, plus the pinned ruff, mypy and pytest),
# then ruff, mypy --strict, the pytest suite (unit tests, and integration tests against the real
# server started by `cargo xtask sdk-env`) and examples/agent.py against a fresh sdk-env.
# Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

log() { printf '\n== %s\n' "$*"; }

venv=target/sdk-python
python=${PYTHON:-python3}

log "python SDK: venv and install"
"$python" --version
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "./sdks/python[dev]"

log "python SDK: the sdk-env fixture"
cargo build -q -p xtask
export CUSTODY_SDK_ENV_BIN="$root/target/debug/xtask"

cd sdks/python
log "python SDK: ruff"
"$root/$venv/bin/ruff" check .
"$root/$venv/bin/ruff" format --check .

log "python SDK: mypy --strict"
"$root/$venv/bin/mypy"

log "python SDK: pytest"
# -p no:cacheprovider: no .pytest_cache left in the source tree.
"$root/$venv/bin/python" -m pytest -q -p no:cacheprovider -rs tests

log "python SDK: examples/agent.py against sdk-env"
env_file="$root/$venv/sdk-env.json"
: >"$env_file"
"$CUSTODY_SDK_ENV_BIN" sdk-env >"$env_file" &
env_pid=$!
trap 'kill "$env_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  [ -s "$env_file" ] && break
  kill -0 "$env_pid" 2>/dev/null || { echo "sdk-env exited before printing its settings" >&2; exit 1; }
  sleep 0.5
done
[ -s "$env_file" ] || { echo "sdk-env printed nothing within 60 s" >&2; exit 1; }
field() { "$root/$venv/bin/python" -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())[sys.argv[2]])' "$env_file" "$1"; }
CUSTODY_URL=$(field base_url) CUSTODY_API_KEY=$(field api_key) CUSTODY_EXAMPLE_AUTO=1 \
  "$root/$venv/bin/python" examples/agent.py --provider "$(field provider)" --path "$(field provider_api_path)"
kill "$env_pid" 2>/dev/null || true
wait "$env_pid" 2>/dev/null || true
trap - EXIT

log "python SDK: ok"
