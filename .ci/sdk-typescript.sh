#!/usr/bin/env bash
# The TypeScript SDK's checks (issue 14): npm ci in sdks/typescript (typescript and @types/node,
# dev only), tsc --noEmit (strict), the build and a check that the committed dist/ is what the
# sources compile to, `npm install ./sdks/typescript` into a scratch project (the package as
# users install it), the node --test suites (unit tests against a local fake; integration tests
# against the real server started by `xtask sdk-env`, required here) and examples/agent.mjs
# against a fresh sdk-env. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
sdk=sdks/typescript

log() { printf '\n== %s\n' "$*"; }

log "typescript SDK: npm ci"
node --version
(cd "$sdk" && npm ci --no-audit --no-fund)

log "typescript SDK: tsc --noEmit (strict)"
(cd "$sdk" && npx tsc --noEmit -p tsconfig.json)

log "typescript SDK: build, and dist/ matches the sources"
(cd "$sdk" && npm run -s build)
if ! git diff --quiet -- "$sdk/dist" || [ -n "$(git ls-files --others --exclude-standard -- "$sdk/dist")" ]; then
  git status --short -- "$sdk/dist"
  echo "sdks/typescript/dist is stale: run 'npm run build' in sdks/typescript and commit dist/" >&2
  exit 1
fi

log "typescript SDK: npm install ./sdks/typescript from another folder"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
(
  cd "$scratch"
  npm init -y >/dev/null
  npm pkg set type=module >/dev/null
  npm install --no-audit --no-fund --install-links "$root/$sdk" >/dev/null
  node --input-type=module -e '
    import { Custody, CustodyError, PolicyDenied, Unavailable, VERSION } from "@custody/sdk";
    const c = new Custody({ apiKey: "ck_x", baseUrl: "http://127.0.0.1:9", maxRetries: 0 });
    const e = await c.me("t").catch((e) => e);
    if (!(e instanceof Unavailable) || !(e instanceof CustodyError) || !PolicyDenied) throw new Error(`unexpected: ${e}`);
    console.log(`@custody/sdk ${VERSION} installed and working`);
  '
  test -f node_modules/@custody/sdk/dist/index.d.ts
  # The declarations work for a strict TypeScript consumer (Node types from the SDK's dev install).
  cat >check.ts <<'TS'
import { Custody, CustodyError, HandoutDisabled, PolicyDenied, type Grant, type SignIn, type Token, type User } from "@custody/sdk";
const custody = new Custody({ apiKey: "ck_x", userTokenGetter: async () => "jwt" });
export async function use(): Promise<number> {
  const user: User = await custody.me();
  const token: Token = await custody.token({ provider: "github" });
  const grants: Grant[] = await custody.grants();
  const signIn: SignIn = await custody.authenticate({ openBrowser: false, timeout: 60 });
  const answer: Response = await custody.request("GET", "/user", { provider: "github", params: { page: 1 } });
  try {
    await custody.token(signIn.userToken, { grantId: grants[0]?.id ?? "" });
  } catch (e) {
    if (e instanceof HandoutDisabled && e instanceof PolicyDenied && e instanceof CustodyError) return e.status ?? 0;
  }
  return user.id.length + token.accessToken.length + answer.status;
}
TS
  "$root/$sdk/node_modules/.bin/tsc" --noEmit --strict --module nodenext --moduleResolution nodenext \
    --target es2022 --types node --typeRoots "$root/$sdk/node_modules/@types" check.ts
  test ! -e node_modules/@custody/sdk/node_modules # no runtime dependency came along
)

log "typescript SDK: the sdk-env fixture"
# CUSTODY_SDK_ENV_BIN may name an already built xtask binary (CI builds it once for all SDKs).
if [ -z "${CUSTODY_SDK_ENV_BIN:-}" ]; then
  cargo build -q -p xtask
  export CUSTODY_SDK_ENV_BIN="$root/target/debug/xtask"
fi
export CUSTODY_SDK_ENV_REQUIRED=1

log "typescript SDK: node --test (unit and integration)"
(cd "$sdk" && node --test --test-reporter=spec test/unit.test.mjs test/integration.test.mjs)

log "typescript SDK: examples/agent.mjs against sdk-env"
env_file=$(mktemp)
# sdk-env serves until its stdin reaches EOF: its stdin is a FIFO whose only writer is fd 3 here,
# so closing fd 3 stops it.
fifo="$scratch/sdk-env-stdin"
mkfifo "$fifo"
"$CUSTODY_SDK_ENV_BIN" sdk-env >"$env_file" <"$fifo" &
env_pid=$!
exec 3>"$fifo"
stop_env() {
  exec 3>&- || true
  for _ in $(seq 1 20); do kill -0 "$env_pid" 2>/dev/null || return 0; sleep 0.5; done
  kill -9 "$env_pid" 2>/dev/null || true
}
trap 'stop_env; rm -rf "$scratch" "$env_file"' EXIT
for _ in $(seq 1 240); do
  [ -s "$env_file" ] && break
  kill -0 "$env_pid" 2>/dev/null || { echo "sdk-env exited before printing its settings" >&2; exit 1; }
  sleep 0.5
done
[ -s "$env_file" ] || { echo "sdk-env printed nothing within 120 s" >&2; exit 1; }
field() { node -e 'const fs=require("fs");process.stdout.write(JSON.parse(fs.readFileSync(process.argv[1],"utf8").split("\n")[0])[process.argv[2]])' "$env_file" "$1"; }
# Until the proxy route is merged (issue 14), the example stops after connecting, loudly.
skip_request=()
route_code=$(curl -s -H "Authorization: Bearer $(field api_key)" \
  "$(field base_url)/v1/proxy/$(field provider)$(field provider_api_path)" | grep -o '"code":"[a-z_]*"' || true)
if [ "$route_code" = '"code":"not_found"' ] || [ "$route_code" = '"code":"method_not_allowed"' ]; then
  printf '\n!!! MISSING ROUTE: this build does not serve /v1/proxy/{provider}/{path}; the example skips request()\n\n' >&2
  skip_request=(--skip-request)
fi
(
  cd "$sdk"
  CUSTODY_URL=$(field base_url) CUSTODY_API_KEY=$(field api_key) \
    node examples/agent.mjs --auto --provider "$(field provider)" --path "$(field provider_api_path)" "${skip_request[@]}"
)
stop_env
wait "$env_pid" 2>/dev/null || true

log "typescript SDK: ok"
