// Starts the real server with its development fakes through `xtask sdk-env` (Custody on SQLite,
// a fake OpenID Connect IdP, a fake OAuth provider serving an API, and a provider whose policy is
// `proxy_only`), reads the one JSON line it prints, and stops it at the end.
//
// The binary is $CUSTODY_SDK_ENV_BIN, else <repo>/target/debug/xtask (`cargo build -p xtask`).
// When it is missing or has no `sdk-env` command, start() answers `{ missing: reason }` so the
// suite can skip loudly; with CUSTODY_SDK_ENV_REQUIRED=1 (CI) that is an error instead.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const FIELDS = [
  "base_url", "admin_token", "app_id", "api_key", "idp_issuer", "user_token_url",
  "provider", "proxy_only_provider", "provider_api_path",
];

export async function startSdkEnv(waitSeconds = 120) {
  const binary = process.env.CUSTODY_SDK_ENV_BIN || path.join(REPO_ROOT, "target/debug/xtask");
  const required = process.env.CUSTODY_SDK_ENV_REQUIRED === "1";
  const missing = (reason) => {
    if (required) throw new Error(`sdk-env is required (CUSTODY_SDK_ENV_REQUIRED=1): ${reason}`);
    return { missing: reason };
  };
  if (!existsSync(binary)) return missing(`${binary} does not exist (run \`cargo build -p xtask\`)`);
  const child = spawn(binary, ["sdk-env"], { cwd: REPO_ROOT, stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (chunk) => (stderr = (stderr + chunk).slice(-8000)));
  const line = await new Promise((resolve) => {
    let stdout = "";
    const timer = setTimeout(() => resolve(null), waitSeconds * 1000);
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
      const end = stdout.indexOf("\n");
      if (end >= 0) {
        clearTimeout(timer);
        resolve(stdout.slice(0, end));
      }
    });
    child.once("exit", () => {
      clearTimeout(timer);
      resolve(null);
    });
  });
  if (line === null) {
    const exited = child.exitCode !== null;
    await stop(child);
    if (exited && /unrecognized|unknown|usage|invalid/i.test(stderr)) {
      return missing(`this xtask has no \`sdk-env\` command (branch proxy not merged): ${stderr.trim().split("\n")[0]}`);
    }
    throw new Error(`sdk-env printed no settings; its stderr:\n${stderr}`);
  }
  const settings = JSON.parse(line);
  for (const field of FIELDS) {
    if (typeof settings[field] !== "string") throw new Error(`sdk-env's line has no ${field}: ${line}`);
  }
  return { env: makeEnv(settings), stop: () => stop(child) };
}

async function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.stdin.end(); // EOF asks sdk-env to stop
  const timer = setTimeout(() => child.kill("SIGTERM"), 10_000);
  const hard = setTimeout(() => child.kill("SIGKILL"), 20_000);
  await exited;
  clearTimeout(timer);
  clearTimeout(hard);
}

function makeEnv(settings) {
  return {
    baseUrl: settings.base_url,
    adminToken: settings.admin_token,
    appId: settings.app_id,
    apiKey: settings.api_key,
    idpIssuer: settings.idp_issuer,
    userTokenUrl: settings.user_token_url,
    provider: settings.provider,
    proxyOnlyProvider: settings.proxy_only_provider,
    providerApiPath: settings.provider_api_path,

    /** A user token signed by the fake IdP (what an app's own sign-in would give it). */
    async userToken(sub, groups = "eng") {
      const url = new URL(settings.user_token_url);
      url.searchParams.set("sub", sub);
      url.searchParams.set("email", `${sub}@example.com`);
      url.searchParams.set("groups", groups);
      const answer = await fetch(url);
      if (!answer.ok) throw new Error(`user_token_url answered ${answer.status}`);
      return (await answer.text()).trim();
    },

    /** An operator call (`/v1/apps/{app_id}...`) with the admin token. */
    async admin(method, pathname, body) {
      const answer = await fetch(`${settings.base_url}/v1/apps/${settings.app_id}${pathname}`, {
        method,
        headers: { Authorization: `Bearer ${settings.admin_token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
        body: body ? JSON.stringify(body) : undefined,
      });
      const text = await answer.text();
      return { status: answer.status, body: text ? JSON.parse(text) : null };
    },
  };
}
