// Unit tests of @custody/sdk against a scripted local HTTP server (test/fake-server.mjs): call
// shapes and headers, error classes, retries and timeouts, user_token_getter, the sign-in poll and
// that no secret reaches an error message or a logged object. Imports the package by its name, so
// the exports map and the committed dist/ are what is tested.
import { test, describe, afterEach } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { inspect } from "node:util";
import * as sdk from "@custody/sdk";
import { fakeServer, hangUp, json, problem, respond } from "./fake-server.mjs";

const {
  Custody, CustodyError, GrantRevoked, HandoutDisabled, NotFound, PolicyDenied, ProviderError,
  ReauthRequired, SignInFailed, Unauthorized, Unavailable, UserDeprovisioned, UserSuspended,
  UserTokenInvalid, USER_AGENT, VERSION,
} = sdk;

const API_KEY = "ck_test_SECRET_api_key_0123456789";
const USER_TOKEN = "eyJ.SECRET-user-token.sig";
const ACCESS_TOKEN = "gho_SECRET_access_token";
const USER = {
  user_id: "0b8c1f2e-0000-4000-8000-000000000001", subject: "alice", status: "active",
  email: "alice@example.com", name: "Alice", groups: ["eng"], roles: [],
  created_at: "2026-12-06T10:00:00Z", last_seen_at: "2026-12-06T10:05:00.123Z",
};
const GRANT = {
  id: "9f1c0000-0000-4000-8000-000000000002", provider: "github", status: "active",
  scopes: ["repo"], account: "alice-gh", user_id: USER.user_id, created_at: "2026-12-06T10:00:00Z",
  updated_at: "2026-12-06T10:00:00Z", last_used_at: null, revoked_at: null,
};

let server;
afterEach(async () => server && (await server.close()));

function client(extra = {}) {
  return new Custody({ apiKey: API_KEY, baseUrl: server.url, backoff: 0.01, ...extra });
}

describe("calls", () => {
  test("me() sends the API key, the user token, the User-Agent and parses the user", async () => {
    server = (await fakeServer()).answer(respond(200, USER));
    const user = await client().me(USER_TOKEN);
    const [req] = server.requests;
    assert.equal(req.method, "GET");
    assert.equal(req.url, "/v1/me");
    assert.equal(req.headers.authorization, `Bearer ${API_KEY}`);
    assert.equal(req.headers["x-user-token"], USER_TOKEN);
    assert.equal(req.headers["user-agent"], `custody-typescript/${VERSION}`);
    assert.equal(USER_AGENT, `custody-typescript/${VERSION}`);
    assert.equal(user.id, USER.user_id);
    assert.deepEqual(user.groups, ["eng"]);
    assert.equal(user.lastSeenAt.toISOString(), "2026-12-06T10:05:00.123Z");
  });

  test("the version in User-Agent is package.json's", () => {
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
    assert.equal(VERSION, pkg.version);
  });

  test("token() by provider and by grant id", async () => {
    const answer = { access_token: ACCESS_TOKEN, token_type: "Bearer", expires_at: "2026-12-06T11:00:00Z", grant_id: GRANT.id, provider: "github", scopes: ["repo"] };
    server = (await fakeServer()).answer(respond(200, answer), respond(200, answer));
    const c = client();
    const byProvider = await c.token(USER_TOKEN, { provider: "github" });
    await c.token(USER_TOKEN, { grantId: GRANT.id });
    assert.deepEqual(JSON.parse(server.requests[0].body), { provider: "github" });
    assert.deepEqual(JSON.parse(server.requests[1].body), { grant_id: GRANT.id });
    assert.equal(server.requests[0].headers["content-type"], "application/json");
    assert.equal(byProvider.accessToken, ACCESS_TOKEN);
    assert.equal(byProvider.grantId, GRANT.id);
    assert.equal(byProvider.expiresAt.toISOString(), "2026-12-06T11:00:00.000Z");
    await assert.rejects(c.token(USER_TOKEN, { provider: "a", grantId: "b" }), TypeError);
  });

  test("grants() follows next_cursor; revokeGrant() deletes by encoded id; connect() sends return_url", async () => {
    server = (await fakeServer()).answer(
      respond(200, { items: [GRANT], next_cursor: "c2" }),
      respond(200, { items: [{ ...GRANT, id: "g2" }], next_cursor: null }),
      respond(200, { ...GRANT, status: "revoked", revoked_at: "2026-12-06T12:00:00Z" }),
      respond(201, { connect_url: "http://custody/v1/connect/start?state=s", expires_at: "2026-12-06T12:10:00Z" }),
    );
    const c = client();
    const grants = await c.grants(USER_TOKEN);
    assert.deepEqual(grants.map((g) => g.id), [GRANT.id, "g2"]);
    assert.equal(server.requests[0].url, "/v1/grants?limit=1000");
    assert.equal(server.requests[1].url, "/v1/grants?limit=1000&cursor=c2");
    const revoked = await c.revokeGrant(USER_TOKEN, "a/b");
    assert.equal(server.requests[2].method, "DELETE");
    assert.equal(server.requests[2].url, "/v1/grants/a%2Fb");
    assert.equal(revoked.status, "revoked");
    const session = await c.connect(USER_TOKEN, { provider: "github", returnUrl: "https://app/done", scopes: ["repo"] });
    assert.deepEqual(JSON.parse(server.requests[3].body), { provider: "github", return_url: "https://app/done", scopes: ["repo"] });
    assert.equal(session.connectUrl, "http://custody/v1/connect/start?state=s");
  });

  test("an answer of the wrong shape is invalid_response", async () => {
    server = (await fakeServer()).answer(respond(200, { subject: 3 }));
    await assert.rejects(client().me(USER_TOKEN), (e) => e instanceof CustodyError && e.code === "invalid_response");
  });

  test("options fall back to CUSTODY_API_KEY and CUSTODY_URL", async () => {
    server = (await fakeServer()).answer(respond(200, USER));
    const saved = { key: process.env.CUSTODY_API_KEY, url: process.env.CUSTODY_URL };
    process.env.CUSTODY_API_KEY = API_KEY;
    process.env.CUSTODY_URL = `${server.url}/`;
    try {
      await new Custody().me(USER_TOKEN);
    } finally {
      for (const [name, value] of [["CUSTODY_API_KEY", saved.key], ["CUSTODY_URL", saved.url]]) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
    assert.equal(server.requests[0].headers.authorization, `Bearer ${API_KEY}`);
    assert.equal(server.requests[0].url, "/v1/me");
    delete process.env.CUSTODY_API_KEY;
    assert.throws(() => new Custody({ baseUrl: server.url }), /no API key/);
    if (saved.key !== undefined) process.env.CUSTODY_API_KEY = saved.key;
  });
});

describe("userTokenGetter", () => {
  test("calls may leave the user token out", async () => {
    server = (await fakeServer()).answer(
      respond(200, USER),
      respond(200, { access_token: ACCESS_TOKEN, grant_id: "g", provider: "github", scopes: [] }),
      respond(200, { ...GRANT, status: "revoked" }),
      respond(200, { ok: true }, { "x-custody-proxy": "upstream" }),
    );
    let calls = 0;
    const c = client({ userTokenGetter: async () => (calls++, USER_TOKEN) });
    await c.me();
    await c.token({ provider: "github" });
    await c.revokeGrant("g1");
    const response = await c.request("GET", "/user", { provider: "github" });
    assert.equal(calls, 4);
    assert.ok(server.requests.every((r) => r.headers["x-user-token"] === USER_TOKEN));
    assert.equal(server.requests[2].url, "/v1/grants/g1");
    assert.equal(server.requests[3].url, "/v1/proxy/github/user");
    assert.deepEqual(await response.json(), { ok: true });
  });

  test("without a token or a getter, UserTokenInvalid user_token_missing and nothing is sent", async () => {
    server = await fakeServer();
    await assert.rejects(client().me(), (e) => e instanceof UserTokenInvalid && e.code === "user_token_missing");
    assert.equal(server.requests.length, 0);
  });
});

describe("errors", () => {
  const cases = [
    [401, "unauthorized", Unauthorized],
    [401, "invalid_user_token", UserTokenInvalid],
    [401, "user_token_missing", UserTokenInvalid],
    [403, "policy_denied", PolicyDenied],
    [403, "handout_disabled", HandoutDisabled],
    [403, "user_suspended", UserSuspended],
    [403, "user_deprovisioned", UserDeprovisioned],
    [404, "grant_not_found", NotFound],
    [404, "provider_not_found", NotFound],
    [410, "grant_revoked", GrantRevoked],
    [410, "reauth_required", ReauthRequired],
    [502, "provider_error", ProviderError],
    [503, "idp_unavailable", Unavailable],
    [409, "idp_not_configured", CustodyError],
  ];
  for (const [status, code, Class] of cases) {
    test(`${status} ${code} is ${Class.name}`, async () => {
      server = (await fakeServer()).answer(respond(status, problem(status, code, `because ${code}`)));
      const error = await client({ maxRetries: 0 }).token(USER_TOKEN, { provider: "github" }).catch((e) => e);
      assert.ok(error instanceof Class, `${error}`);
      assert.ok(error instanceof CustodyError);
      assert.ok(error instanceof Error);
      assert.equal(error.constructor, Class);
      assert.equal(error.name, Class.name);
      assert.equal(error.status, status);
      assert.equal(error.code, code);
      assert.equal(error.detail, `because ${code}`);
      assert.equal(error.requestId, "req-123");
      assert.match(error.message, new RegExp(`${status} ${code}: because ${code} \\(request id req-123\\)`));
    });
  }

  test("HandoutDisabled is a PolicyDenied", () => {
    assert.ok(new HandoutDisabled(403, "handout_disabled", "d") instanceof PolicyDenied);
  });

  test("a non-JSON error body still maps by status", async () => {
    server = (await fakeServer()).answer((req, res) => { res.writeHead(502); res.end("<html>bad gateway</html>"); });
    const error = await client().me(USER_TOKEN).catch((e) => e);
    assert.ok(error instanceof ProviderError);
    assert.equal(error.code, "http_502");
  });
});

describe("retries and timeouts", () => {
  test("an idempotent call is retried on 503 up to twice, then Unavailable", async () => {
    const busy = respond(503, problem(503, "server_busy"), { "retry-after": "0" });
    server = (await fakeServer()).answer(busy, busy, respond(200, USER));
    assert.equal((await client().me(USER_TOKEN)).subject, "alice");
    assert.equal(server.requests.length, 3);
    await server.close();
    server = (await fakeServer()).answer(busy, busy, busy, respond(200, USER));
    await assert.rejects(client().me(USER_TOKEN), (e) => e instanceof Unavailable && e.status === 503 && e.code === "server_busy");
    assert.equal(server.requests.length, 3);
  });

  test("a POST is never retried", async () => {
    server = (await fakeServer()).answer(respond(503, problem(503, "service_unavailable")), respond(200, {}));
    await assert.rejects(client().token(USER_TOKEN, { provider: "github" }), Unavailable);
    assert.equal(server.requests.length, 1);
    await server.close();
    server = (await fakeServer()).answer(hangUp(), respond(200, {}));
    await assert.rejects(client().connect(USER_TOKEN, { provider: "p", returnUrl: "https://a/" }), (e) => e instanceof Unavailable && e.code === "connection_error" && e.status === null);
    assert.equal(server.requests.length, 1);
  });

  test("connection errors are retried for idempotent calls", async () => {
    server = (await fakeServer()).answer(hangUp(), hangUp(), respond(200, { items: [], next_cursor: null }));
    assert.deepEqual(await client().grants(USER_TOKEN), []);
    assert.equal(server.requests.length, 3);
  });

  test("a closed port is Unavailable connection_error", async () => {
    server = await fakeServer();
    const url = server.url;
    await server.close();
    server = null;
    const c = new Custody({ apiKey: API_KEY, baseUrl: url, backoff: 0.01 });
    await assert.rejects(c.me(USER_TOKEN), (e) => e instanceof Unavailable && e.code === "connection_error" && e.status === null);
  });

  test("a call that outlives the timeout is Unavailable timeout, not retried", async () => {
    server = await fakeServer(() => {}); // never answers
    const started = Date.now();
    await assert.rejects(client({ timeout: 0.2 }).me(USER_TOKEN), (e) => e instanceof Unavailable && e.code === "timeout");
    assert.ok(Date.now() - started < 2000);
    assert.equal(server.requests.length, 1);
  });

  test("the default timeout is 30 s", async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    let attempts = 0;
    const hanging = (url, init) => new Promise((resolve, reject) => {
      attempts++;
      init.signal.addEventListener("abort", () => reject(init.signal.reason));
    });
    const c = new Custody({ apiKey: API_KEY, baseUrl: "http://127.0.0.1:9", fetch: hanging });
    let outcome = null;
    const call = c.me(USER_TOKEN).catch((e) => (outcome = e));
    await new Promise((resolve) => setImmediate(resolve));
    t.mock.timers.tick(29_999);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(outcome, null, "not yet after 29.999 s");
    t.mock.timers.tick(1);
    await call;
    assert.ok(outcome instanceof Unavailable && outcome.code === "timeout", `${outcome}`);
    assert.equal(attempts, 1);
  });
});

describe("request() through the proxy", () => {
  test("builds /v1/proxy/{provider}/{path} with query, body and grant header", async () => {
    server = (await fakeServer()).answer(respond(201, { created: true }, { "x-custody-proxy": "upstream", "x-custody-grant-id": "g9" }));
    const response = await client().request(USER_TOKEN, "post", "/repos/o/r/issues", {
      provider: "github", params: { per_page: 5, labels: ["a", "b"], skip: undefined },
      json: { title: "hi" }, headers: { Accept: "application/vnd.github+json" }, grantId: "g9",
    });
    const [req] = server.requests;
    assert.equal(req.method, "POST");
    assert.equal(req.url, "/v1/proxy/github/repos/o/r/issues?per_page=5&labels=a&labels=b");
    assert.equal(req.headers["x-custody-grant-id"], "g9");
    assert.equal(req.headers.accept, "application/vnd.github+json");
    assert.deepEqual(JSON.parse(req.body), { title: "hi" });
    assert.equal(response.status, 201);
    assert.equal(response.headers.get("x-custody-grant-id"), "g9");
  });

  test("the provider's own errors come back as the Response; Custody's refusals throw", async () => {
    server = (await fakeServer()).answer(
      respond(503, { upstream: "down" }, { "x-custody-proxy": "upstream" }),
      respond(403, problem(403, "policy_denied")),
      respond(404, problem(404, "grant_not_found")),
    );
    const c = client();
    const upstream = await c.request(USER_TOKEN, "GET", "/x", { provider: "github" });
    assert.equal(upstream.status, 503);
    assert.equal(server.requests.length, 1, "a provider's 503 is not retried");
    await assert.rejects(c.request(USER_TOKEN, "GET", "/x", { provider: "github" }), PolicyDenied);
    await assert.rejects(c.request(USER_TOKEN, "GET", "/x", { provider: "github" }), NotFound);
  });

  test("paths that would leave the provider's base, and reserved headers, are refused before sending", async () => {
    server = await fakeServer();
    const c = client();
    for (const path of ["/../v1/me", "/a/%2e%2e/b", "/a/.%2E/b", "/a/./b", "/a\\..\\b", "/a/.\t./b", "https://evil.example/x"]) {
      await assert.rejects(c.request(USER_TOKEN, "GET", path, { provider: "github" }), (e) => e instanceof CustodyError && e.code === "invalid_proxy_path", path);
    }
    for (const name of ["Authorization", "X-User-Token", "Cookie", "X-Custody-Grant-Id"]) {
      await assert.rejects(c.request(USER_TOKEN, "GET", "/x", { provider: "github", headers: { [name]: "v" } }), TypeError);
    }
    assert.equal(server.requests.length, 0);
  });
});

describe("authenticate()", () => {
  const started = { session_id: "s1", authorize_url: "http://idp.example/authorize?state=x", expires_at: "2026-12-06T12:10:00Z" };

  test("hands the URL over, polls until complete, returns the token and user", async () => {
    server = (await fakeServer()).answer(
      respond(201, started),
      respond(200, { session_id: "s1", status: "pending", expires_at: started.expires_at }),
      respond(200, { session_id: "s1", status: "complete", expires_at: started.expires_at, user: USER, user_token: USER_TOKEN }),
    );
    const seen = [];
    const signIn = await client().authenticate({ onAuthorizeUrl: (url) => seen.push(url), pollInterval: 0.01 });
    assert.deepEqual(seen, [started.authorize_url]);
    assert.equal(server.requests[0].method, "POST");
    assert.equal(server.requests[0].url, "/v1/auth/sessions");
    assert.deepEqual(JSON.parse(server.requests[0].body), {});
    assert.equal(server.requests[0].headers["x-user-token"], undefined);
    assert.equal(server.requests[2].url, "/v1/auth/sessions/s1");
    assert.equal(signIn.userToken, USER_TOKEN);
    assert.equal(signIn.user.subject, "alice");
  });

  test("headless (openBrowser: false) prints the URL to stderr", async () => {
    server = (await fakeServer()).answer(
      respond(201, started),
      respond(200, { session_id: "s1", status: "complete", user: USER, user_token: USER_TOKEN }),
    );
    const written = [];
    const original = process.stderr.write;
    process.stderr.write = (chunk, ...rest) => (written.push(String(chunk)), true);
    try {
      await client().authenticate({ openBrowser: false, pollInterval: 0.01 });
    } finally {
      process.stderr.write = original;
    }
    assert.match(written.join(""), /open this URL in a browser:\n  http:\/\/idp\.example\/authorize\?state=x/);
  });

  test("a failed, expired, already collected or too slow sign-in is SignInFailed", async () => {
    const outcomes = [
      [{ status: "failed", error: "access_denied" }, "access_denied"],
      [{ status: "expired" }, "session_expired"],
      [{ status: "complete", user: USER }, "user_token_already_taken"],
    ];
    for (const [poll, code] of outcomes) {
      server = (await fakeServer()).answer(respond(201, started), respond(200, { session_id: "s1", ...poll }));
      await assert.rejects(client().authenticate({ onAuthorizeUrl: () => {}, pollInterval: 0.01 }), (e) => e instanceof SignInFailed && e instanceof CustodyError && e.code === code);
      await server.close();
    }
    server = await fakeServer((req, res) => json(res, req.method === "POST" ? 201 : 200, req.method === "POST" ? started : { session_id: "s1", status: "pending" }));
    await assert.rejects(client().authenticate({ onAuthorizeUrl: () => {}, pollInterval: 0.02, timeout: 0.1 }), (e) => e instanceof SignInFailed && e.code === "sign_in_timeout");
  });
});

describe("no secret in errors or logs", () => {
  test("the API key, the user token and query secrets never reach an error's message or stack", async () => {
    const querySecret = "qs_SECRET_in_query";
    const errors = [];
    server = (await fakeServer()).answer(respond(401, problem(401, "unauthorized", "the API key is not valid")), hangUp(), hangUp(), hangUp(), respond(403, problem(403, "policy_denied")));
    const c = client({ maxRetries: 2 });
    errors.push(await c.me(USER_TOKEN).catch((e) => e));
    errors.push(await c.grants(USER_TOKEN).catch((e) => e));
    errors.push(await c.request(USER_TOKEN, "GET", "/x", { provider: "p", params: { key: querySecret } }).catch((e) => e));
    const closed = new Custody({ apiKey: API_KEY, baseUrl: "http://127.0.0.1:9", maxRetries: 0 });
    errors.push(await closed.request(USER_TOKEN, "GET", "/x", { provider: "p", params: { key: querySecret } }).catch((e) => e));
    errors.push(await closed.token(USER_TOKEN, { provider: "p" }).catch((e) => e));
    for (const error of errors) {
      assert.ok(error instanceof CustodyError, `${error}`);
      const shown = [error.message, error.stack, inspect(error, { depth: 5 }), JSON.stringify(error), String(error)].join("\n");
      for (const secret of [API_KEY, USER_TOKEN, querySecret]) {
        assert.ok(!shown.includes(secret), `${secret} leaked in ${shown}`);
      }
    }
  });

  test("a logged client, token or sign-in hides its secret", async () => {
    server = (await fakeServer()).answer(
      respond(200, { access_token: ACCESS_TOKEN, grant_id: "g", provider: "github", scopes: [] }),
      respond(201, { session_id: "s1", authorize_url: "http://idp/a" }),
      respond(200, { session_id: "s1", status: "complete", user: USER, user_token: USER_TOKEN }),
    );
    const c = client();
    const token = await c.token(USER_TOKEN, { provider: "github" });
    const signIn = await c.authenticate({ onAuthorizeUrl: () => {}, pollInterval: 0.01 });
    for (const [value, secret] of [[c, API_KEY], [token, ACCESS_TOKEN], [signIn, USER_TOKEN]]) {
      const shown = inspect(value, { depth: 5 }) + JSON.stringify(value);
      assert.ok(!shown.includes(secret), shown);
    }
    assert.equal(token.accessToken, ACCESS_TOKEN);
    assert.match(inspect(token), /\[hidden\]/);
  });
});
