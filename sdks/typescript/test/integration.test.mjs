// @custody/sdk against the real server (`xtask sdk-env`, see test/sdk-env.mjs): every call, the
// error classes as Custody really answers them, authenticate() headless with the sign-in played
// at the fake IdP, connect + request() through the proxy, and `proxy_only` grants. Browser steps
// are plain fetch (examples/fake-browser.mjs). Skips loudly when the fixture or the proxy route
// is missing from this build.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { inspect } from "node:util";
import {
  Custody, CustodyError, GrantRevoked, HandoutDisabled, NotFound, PolicyDenied, SignInFailed,
  Unauthorized, Unavailable, UserDeprovisioned, UserTokenInvalid,
} from "@custody/sdk";
import { connectInBrowser, signInAtIdp } from "../examples/fake-browser.mjs";
import { startSdkEnv } from "./sdk-env.mjs";

// Where connect flows come back to; never opened (the browser stops at the redirect to it).
const RETURN_URL = "http://127.0.0.1:9/sdk-tests/connected";

const started = await startSdkEnv();
const skipAll = started.missing ? `MISSING FIXTURE: ${started.missing}` : false;
if (skipAll) process.stderr.write(`\n!!! SKIPPING the integration tests: ${skipAll}\n\n`);
const env = started.env;
after(async () => started.stop?.());

const freshUser = () => `u-${randomUUID().slice(0, 12)}`;
const client = (options = {}) => new Custody({ apiKey: env.apiKey, baseUrl: env.baseUrl, ...options });

async function connect(c, userToken, provider) {
  const session = await c.connect(userToken, { provider, returnUrl: RETURN_URL });
  const outcome = await connectInBrowser(session.connectUrl, RETURN_URL);
  assert.equal(outcome.status, "connected", JSON.stringify(outcome));
  return outcome.grant_id;
}

/** Why request() cannot be tested here, or false when the proxy route answers. */
async function proxyMissing() {
  if (skipAll) return skipAll;
  const answer = await fetch(`${env.baseUrl}/v1/proxy/${env.provider}${env.providerApiPath}`, {
    headers: { Authorization: `Bearer ${env.apiKey}`, "X-User-Token": await env.userToken("proxy-probe") },
  });
  const body = (answer.headers.get("content-type") ?? "").startsWith("application/problem+json") ? await answer.json() : {};
  if (["not_found", "method_not_allowed"].includes(body.code)) {
    const reason = "MISSING ROUTE: this build of Custody does not serve /v1/proxy/{provider}/{path} (issue 14's proxy is not merged yet)";
    process.stderr.write(`\n!!! SKIPPING the request() tests: ${reason}\n\n`);
    return reason;
  }
  return false;
}

describe("authenticate()", { skip: skipAll }, () => {
  test("headless: prints the URL; the person signs in at the IdP; a working user token comes back", async () => {
    const username = freshUser();
    const signingIn = [];
    const original = process.stderr.write;
    let printed = "";
    process.stderr.write = function (chunk, ...rest) {
      printed += String(chunk);
      const url = /https?:\/\/\S+/.exec(String(chunk));
      if (url) signingIn.push(signInAtIdp(url[0], username)); // the person at another browser
      return original.call(this, chunk, ...rest);
    };
    let signIn;
    try {
      signIn = await client().authenticate({ openBrowser: false, timeout: 30, pollInterval: 0.1 });
    } finally {
      process.stderr.write = original;
    }
    await Promise.all(signingIn);
    assert.match(printed, /open this URL in a browser/);
    assert.equal(signIn.user.subject, username);
    assert.equal(signIn.user.status, "active");
    assert.equal(signIn.userToken.split(".").length, 3, "a JWT: the sign-in's ID token");
    assert.ok(!inspect(signIn).includes(signIn.userToken));
    const me = await client().me(signIn.userToken);
    assert.deepEqual([me.id, me.subject, me.email], [signIn.user.id, username, `${username}@example.com`]);
  });

  test("onAuthorizeUrl receives the URL instead", async () => {
    const username = freshUser();
    let browsing;
    const signIn = await client().authenticate({
      timeout: 30, pollInterval: 0.1, onAuthorizeUrl: (url) => void (browsing = signInAtIdp(url, username)),
    });
    await browsing;
    assert.equal(signIn.user.subject, username);
  });

  test("nobody signs in: SignInFailed sign_in_timeout", async () => {
    await assert.rejects(
      client().authenticate({ timeout: 0.3, pollInterval: 0.1, onAuthorizeUrl: () => {} }),
      (e) => e instanceof SignInFailed && e.code === "sign_in_timeout",
    );
  });
});

describe("the calls", { skip: skipAll }, () => {
  test("me, grants, connect, token by provider and by grant, revokeGrant", async () => {
    const username = freshUser();
    const userToken = await env.userToken(username);
    const c = client();
    const me = await c.me(userToken);
    assert.deepEqual([me.subject, me.status], [username, "active"]);
    assert.ok(Array.isArray(me.groups) && Array.isArray(me.roles));
    assert.deepEqual(await c.grants(userToken), []);

    const session = await c.connect(userToken, { provider: env.provider, returnUrl: RETURN_URL });
    assert.ok(session.connectUrl.startsWith(env.baseUrl), session.connectUrl);
    assert.ok(session.expiresAt instanceof Date && session.expiresAt > new Date());
    const outcome = await connectInBrowser(session.connectUrl, RETURN_URL);
    assert.equal(outcome.status, "connected", JSON.stringify(outcome));
    const grantId = outcome.grant_id;

    const grants = await c.grants(userToken);
    assert.deepEqual(grants.map((g) => [g.id, g.provider, g.status, g.userId]), [[grantId, env.provider, "active", me.id]]);

    const byProvider = await c.token(userToken, { provider: env.provider });
    const byGrant = await c.token(userToken, { grantId });
    assert.equal(byProvider.grantId, grantId);
    assert.equal(byGrant.grantId, grantId);
    assert.equal(byProvider.provider, env.provider);
    assert.ok(byProvider.accessToken && byProvider.accessToken === byGrant.accessToken);
    assert.ok(!inspect(byProvider).includes(byProvider.accessToken));

    const revoked = await c.revokeGrant(userToken, grantId);
    assert.deepEqual([revoked.id, revoked.status], [grantId, "revoked"]);
    assert.ok(revoked.revokedAt instanceof Date);
    const error = await c.token(userToken, { grantId }).catch((e) => e);
    assert.ok(error instanceof GrantRevoked, `${error}`);
    assert.deepEqual([error.status, error.code], [410, "grant_revoked"]);
    assert.ok(error.requestId);
  });

  test("a userTokenGetter stands in for the token", async () => {
    const username = freshUser();
    const userToken = await env.userToken(username);
    let calls = 0;
    const c = client({ userTokenGetter: async () => (calls++, userToken) });
    assert.equal((await c.me()).subject, username);
    const grantId = await connect(c, userToken, env.provider);
    assert.deepEqual((await c.grants()).map((g) => g.id), [grantId]);
    assert.equal((await c.token({ provider: env.provider })).grantId, grantId);
    assert.equal((await c.revokeGrant(grantId)).status, "revoked");
    assert.equal(calls, 4);
  });
});

describe("error classes from the real server", { skip: skipAll }, () => {
  test("Unauthorized, UserTokenInvalid, NotFound", async () => {
    const userToken = await env.userToken(freshUser());
    const wrongKey = new Custody({ apiKey: "ck_wrong_key_0000", baseUrl: env.baseUrl });
    const unauthorized = await wrongKey.me(userToken).catch((e) => e);
    assert.ok(unauthorized instanceof Unauthorized && unauthorized.status === 401, `${unauthorized}`);
    assert.ok(!unauthorized.message.includes("ck_wrong_key_0000"));

    const invalid = await client().me("not.a.jwt").catch((e) => e);
    assert.ok(invalid instanceof UserTokenInvalid && invalid.code === "invalid_user_token", `${invalid}`);

    const notFound = await client().token(userToken, { grantId: randomUUID() }).catch((e) => e);
    assert.ok(notFound instanceof NotFound && notFound.code === "grant_not_found", `${notFound}`);
    for (const error of [unauthorized, invalid, notFound]) {
      assert.ok(error instanceof CustodyError);
      assert.ok(!error.message.includes(env.apiKey) && !error.message.includes(userToken));
    }
  });

  test("PolicyDenied: a provider whose policy lets nobody in", async () => {
    const template = await env.admin("GET", `/providers/${env.provider}`);
    assert.equal(template.status, 200);
    const name = `denied-${randomUUID().slice(0, 8)}`;
    const { authorization_url, token_url, client_id } = template.body;
    const created = await env.admin("PUT", `/providers/${name}`, { authorization_url, token_url, client_id, client_secret: "unused-client-secret" });
    assert.equal(created.status, 200, JSON.stringify(created.body));
    const policy = await env.admin("PUT", `/policies/${name}`, { allow_groups: ["nobody-has-this"], allow_roles: [] });
    assert.equal(policy.status, 200, JSON.stringify(policy.body));
    const userToken = await env.userToken(freshUser());
    const denied = await client().connect(userToken, { provider: name, returnUrl: RETURN_URL }).catch((e) => e);
    assert.ok(denied instanceof PolicyDenied && denied.status === 403 && denied.code === "policy_denied", `${denied}`);
  });

  test("UserDeprovisioned after the operator deprovisions the user", async () => {
    const userToken = await env.userToken(freshUser());
    const me = await client().me(userToken);
    const done = await env.admin("POST", `/users/${me.id}/deprovision`);
    assert.equal(done.status, 200);
    const error = await client().me(userToken).catch((e) => e);
    assert.ok(error instanceof UserDeprovisioned && error.code === "user_deprovisioned", `${error}`);
  });

  test("Unavailable when nothing listens", async () => {
    const closed = new Custody({ apiKey: env.apiKey, baseUrl: "http://127.0.0.1:9", maxRetries: 1, backoff: 0.01 });
    const error = await closed.me("x.y.z").catch((e) => e);
    assert.ok(error instanceof Unavailable && error.status === null && error.code === "connection_error", `${error}`);
  });
});

describe("request() through the proxy", { skip: skipAll }, () => {
  let missing = false;
  before(async () => (missing = await proxyMissing()));

  test("calls the provider's API as the user; Custody's refusals throw", async (t) => {
    if (missing) return t.skip(missing);
    const username = freshUser();
    const userToken = await env.userToken(username);
    const c = client();
    const grantId = await connect(c, userToken, env.provider);
    const answer = await c.request(userToken, "GET", env.providerApiPath, { provider: env.provider });
    assert.equal(answer.status, 200, await answer.clone().text());
    assert.equal(answer.headers.get("x-custody-proxy"), "upstream");
    assert.equal(answer.headers.get("x-custody-grant-id"), grantId);
    const account = await answer.json(); // the fake provider's API: the connected account
    assert.equal(account.login, "fake-user");

    const pinned = await c.request(userToken, "GET", env.providerApiPath, { provider: env.provider, grantId, params: { page: 1 } });
    assert.equal(pinned.status, 200);
    await pinned.body?.cancel();

    await c.revokeGrant(userToken, grantId);
    await assert.rejects(c.request(userToken, "GET", env.providerApiPath, { provider: env.provider, grantId }), GrantRevoked);
    const stranger = await env.userToken(freshUser());
    await assert.rejects(c.request(stranger, "GET", env.providerApiPath, { provider: env.provider }), NotFound);
  });

  test("proxy_only: token() is refused with handout_disabled, request() works", async (t) => {
    const userToken = await env.userToken(freshUser());
    const c = client();
    const grantId = await connect(c, userToken, env.proxyOnlyProvider);
    const refused = await c.token(userToken, { provider: env.proxyOnlyProvider }).catch((e) => e);
    assert.ok(refused instanceof HandoutDisabled && refused instanceof PolicyDenied, `${refused}`);
    assert.deepEqual([refused.status, refused.code], [403, "handout_disabled"]);
    await assert.rejects(c.token(userToken, { grantId }), HandoutDisabled);
    if (missing) return t.skip(`token() refused as it should; request() not tried: ${missing}`);
    const answer = await c.request(userToken, "GET", env.providerApiPath, { provider: env.proxyOnlyProvider });
    assert.equal(answer.status, 200, await answer.clone().text());
    assert.equal(answer.headers.get("x-custody-proxy"), "upstream");
    await answer.body?.cancel();
  });
});
