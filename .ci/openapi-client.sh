#!/usr/bin/env bash
# Proves docs/openapi.json generates a usable client: installs openapi-python-client (pinned) in a
# virtualenv under target/, generates a Python client from the document, and fails when the
# generator warns (dropped responses, parameters or schemas) or fails.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.29.1
VENV=target/openapi-client/venv
OUT=target/openapi-client/generated
if [ ! -x "$VENV/bin/openapi-python-client" ] || ! "$VENV/bin/pip" show openapi-python-client 2>/dev/null | grep -q "^Version: $VERSION$"; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "openapi-python-client==$VERSION"
fi
rm -rf "$OUT"
mkdir -p "$(dirname "$OUT")"
LOG=target/openapi-client/generate.log
# No post-generation hooks (ruff formatting): only the generator's own verdict matters here.
CONFIG=target/openapi-client/config.yml
printf 'post_hooks: []\n' >"$CONFIG"
if ! "$VENV/bin/openapi-python-client" generate --path docs/openapi.json --output-path "$OUT" --meta none --config "$CONFIG" >"$LOG" 2>&1; then
    cat "$LOG"
    echo "openapi-client: generation failed" >&2
    exit 1
fi
cat "$LOG"
if grep -Eqi "warning|could not|unable to|not supported|skipping|dropped" "$LOG"; then
    echo "openapi-client: the generator warned about docs/openapi.json (see above)" >&2
    exit 1
fi
echo "openapi-client: generated a client from docs/openapi.json without warnings"
