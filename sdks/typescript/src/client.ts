/**
 * The `Custody` client: one method per call of the SDK contract (surfaces.md, section 3), each
 * returning a Promise, plus `request()` through the proxy (section 4).
 *
 * Every call that acts for a user takes the user's token first; when the client was built with
 * `userTokenGetter`, that argument may be left out (`me()`, `token({ provider })`,
 * `request("GET", "/user", { provider })`).
 */

import { makeSignInUrlHandler, type SignInUrlHandler } from "./browser.js";
import { CustodyError, SignInFailed, UserTokenInvalid } from "./errors.js";
import { Transport, sleep, type Call } from "./http.js";
import {
  makeSignIn,
  parseAuthSession,
  parseConnectSession,
  parseGrant,
  parseGrantList,
  parseToken,
  parseUser,
  type ConnectSession,
  type Grant,
  type SignIn,
  type Token,
  type User,
} from "./models.js";

export const DEFAULT_BASE_URL = "http://127.0.0.1:8080";

export interface CustodyOptions {
  /** The app's API key; default `CUSTODY_API_KEY`. */
  apiKey?: string;
  /** Custody's URL; default `CUSTODY_URL`, else `http://127.0.0.1:8080`. */
  baseUrl?: string;
  /** Seconds each attempt may take (default 30). */
  timeout?: number;
  /** Retries of idempotent calls on 503 and connection errors (default 2). */
  maxRetries?: number;
  /** Seconds of the first backoff, doubled each retry, with jitter (default 0.5). */
  backoff?: number;
  /** Returns the current user's JWT, so calls may leave the user token out. */
  userTokenGetter?: () => string | Promise<string>;
  /** The fetch to use (default the platform's). */
  fetch?: typeof fetch;
}

export interface TokenOptions {
  provider?: string;
  grantId?: string;
}

export interface ConnectOptions {
  provider: string;
  returnUrl: string;
  scopes?: string[];
}

export interface AuthenticateOptions {
  /** Open the system browser (default true); headless machines print the URL instead. */
  openBrowser?: boolean;
  /** Seconds to wait for the sign-in to complete (default 300). */
  timeout?: number;
  /** Seconds between polls (default 2). */
  pollInterval?: number;
  /** Receives the sign-in URL instead of it being opened or printed (a GUI, a test). */
  onAuthorizeUrl?: (url: string) => void | Promise<void>;
  signal?: AbortSignal;
}

export type QueryValue = string | number | boolean | null | undefined | Array<string | number | boolean>;

export interface RequestOptions {
  /** The provider whose API to call (required). */
  provider: string;
  /** Query parameters, appended to `path`. */
  params?: Record<string, QueryValue>;
  /** A JSON body (sets `Content-Type: application/json`). */
  json?: unknown;
  /** A raw body, when not `json`. */
  body?: string | Uint8Array;
  /** Headers for the provider (Custody drops `Authorization`, `Cookie`, `Host`, `X-Custody-*`). */
  headers?: Record<string, string>;
  /** Use this grant instead of the provider's active one (`X-Custody-Grant-Id`). */
  grantId?: string;
  signal?: AbortSignal;
}

// Headers request() must not let the caller set: Custody owns them (the API key, the user token,
// the grant choice) or strips them before the provider (surfaces.md, section 4).
const RESERVED_PROXY_HEADERS = new Set(["authorization", "x-user-token", "cookie", "host"]);

function segment(value: string): string {
  return encodeURIComponent(value);
}

function queryString(params: Record<string, QueryValue> | undefined): string {
  if (!params) return "";
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value === null || value === undefined) continue;
    for (const item of Array.isArray(value) ? value : [value]) query.append(name, String(item));
  }
  const text = query.toString();
  return text ? `?${text}` : "";
}

/**
 * The provider API path as sent after `/v1/proxy/{provider}/`. A `.` or `..` segment (plain or
 * percent-encoded) is refused here: `fetch` would resolve it before Custody could refuse it, and
 * the request would reach another Custody route instead of the provider.
 */
export function proxyPath(path: string): string {
  // URL parsing drops tabs and newlines and reads `\` as `/`, so both could hide a `..`.
  if (/[\t\n\r]/.test(path)) {
    throw new CustodyError(null, "invalid_proxy_path", "the path must not contain tabs or line breaks");
  }
  const trimmed = path.replace(/^[/\\]+/, "");
  const pathOnly = trimmed.split(/[?#]/, 1)[0] ?? "";
  for (const part of pathOnly.split(/[/\\]/)) {
    if (/^(\.|%2e){1,2}$/i.test(part)) {
      throw new CustodyError(null, "invalid_proxy_path", "the path must stay under the provider's API base (no `.` or `..` segments)");
    }
  }
  if (/^[a-z][a-z0-9+.-]*:/i.test(trimmed) || path.startsWith("//")) {
    throw new CustodyError(null, "invalid_proxy_path", "the path must be relative to the provider's API base, not a URL");
  }
  return trimmed;
}

export class Custody {
  private readonly transport: Transport;
  private readonly userTokenGetter: (() => string | Promise<string>) | undefined;
  /** Custody's URL, without a trailing slash. */
  readonly baseUrl: string;

  constructor(options: CustodyOptions = {}) {
    const apiKey = options.apiKey ?? process.env.CUSTODY_API_KEY;
    if (!apiKey) throw new TypeError("no API key: pass { apiKey } or set CUSTODY_API_KEY");
    const baseUrl = (options.baseUrl ?? process.env.CUSTODY_URL ?? DEFAULT_BASE_URL).replace(/\/+$/, "");
    if (!/^https?:\/\//.test(baseUrl)) throw new TypeError("baseUrl must start with http:// or https://");
    const maxRetries = options.maxRetries ?? 2;
    if (!Number.isInteger(maxRetries) || maxRetries < 0) throw new TypeError("maxRetries must be 0 or more");
    const timeout = options.timeout ?? 30;
    if (!(timeout > 0)) throw new TypeError("timeout must be a positive number of seconds");
    const fetchImpl = options.fetch ?? globalThis.fetch;
    if (typeof fetchImpl !== "function") throw new TypeError("no fetch: use Node 18+ or pass { fetch }");
    this.baseUrl = baseUrl;
    this.userTokenGetter = options.userTokenGetter;
    this.transport = new Transport({
      apiKey,
      baseUrl,
      timeoutMs: timeout * 1000,
      maxRetries,
      backoffMs: (options.backoff ?? 0.5) * 1000,
      fetch: fetchImpl,
    });
  }

  /** Never shows the API key. */
  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return `Custody { baseUrl: '${this.baseUrl}' }`;
  }

  toJSON(): Record<string, string> {
    return { baseUrl: this.baseUrl };
  }

  private async userToken(given: string | undefined): Promise<string> {
    if (given) return given;
    if (this.userTokenGetter) {
      const token = await this.userTokenGetter();
      if (token) return token;
    }
    throw new UserTokenInvalid(null, "user_token_missing", "no user token: pass one or build the client with userTokenGetter");
  }

  /** The signed-in user (`GET /v1/me`). */
  async me(userToken?: string): Promise<User> {
    const token = await this.userToken(userToken);
    return parseUser(await this.transport.json({ method: "GET", path: "/v1/me", userToken: token }));
  }

  /** A provider access token for the user, by provider or grant (`POST /v1/token`). */
  async token(options: TokenOptions): Promise<Token>;
  async token(userToken: string | undefined, options: TokenOptions): Promise<Token>;
  async token(first: string | undefined | TokenOptions, second?: TokenOptions): Promise<Token> {
    const [given, options] = typeof first === "object" && first !== null ? [undefined, first] : [first, second];
    const { provider, grantId } = options ?? {};
    if ((provider === undefined) === (grantId === undefined)) {
      throw new TypeError("token() takes exactly one of { provider } or { grantId }");
    }
    const token = await this.userToken(given);
    const json = provider !== undefined ? { provider } : { grant_id: grantId };
    return parseToken(await this.transport.json({ method: "POST", path: "/v1/token", userToken: token, json }));
  }

  /** The user's grants, newest first (`GET /v1/grants`, every page). */
  async grants(userToken?: string): Promise<Grant[]> {
    const token = await this.userToken(userToken);
    const all: Grant[] = [];
    let cursor: string | null = null;
    do {
      const path: string = `/v1/grants${queryString({ limit: 1000, cursor })}`;
      const page = await this.transport.json({ method: "GET", path, userToken: token });
      all.push(...parseGrantList(page));
      const next = (page as { next_cursor?: unknown } | null)?.next_cursor;
      cursor = typeof next === "string" && next ? next : null;
    } while (cursor !== null);
    return all;
  }

  /** Revokes one of the user's grants (`DELETE /v1/grants/{id}`); returns it, `revoked`. */
  async revokeGrant(grantId: string): Promise<Grant>;
  async revokeGrant(userToken: string | undefined, grantId: string): Promise<Grant>;
  async revokeGrant(first: string | undefined, second?: string): Promise<Grant> {
    const [given, grantId] = second === undefined ? [undefined, first] : [first, second];
    if (!grantId) throw new TypeError("revokeGrant() needs a grant id");
    const token = await this.userToken(given);
    const path = `/v1/grants/${segment(grantId)}`;
    return parseGrant(await this.transport.json({ method: "DELETE", path, userToken: token }));
  }

  /** Starts connecting a provider: send the user's browser to `connectUrl` (`POST /v1/connect/sessions`). */
  async connect(options: ConnectOptions): Promise<ConnectSession>;
  async connect(userToken: string | undefined, options: ConnectOptions): Promise<ConnectSession>;
  async connect(first: string | undefined | ConnectOptions, second?: ConnectOptions): Promise<ConnectSession> {
    const [given, options] = typeof first === "object" && first !== null ? [undefined, first] : [first, second];
    if (!options?.provider || !options.returnUrl) throw new TypeError("connect() needs { provider, returnUrl }");
    const token = await this.userToken(given);
    const json: Record<string, unknown> = { provider: options.provider, return_url: options.returnUrl };
    if (options.scopes !== undefined) json.scopes = options.scopes;
    const answer = await this.transport.json({ method: "POST", path: "/v1/connect/sessions", userToken: token, json });
    return parseConnectSession(answer);
  }

  /**
   * Signs a user in through the app's IdP: starts a sign-in session, opens the browser on its URL
   * (or prints it when headless or `openBrowser: false`; `onAuthorizeUrl` receives it instead),
   * then polls until the sign-in completes. Throws `SignInFailed` when it fails, expires or
   * `timeout` seconds pass.
   */
  async authenticate(options: AuthenticateOptions = {}): Promise<SignIn> {
    const timeoutMs = (options.timeout ?? 300) * 1000;
    const pollMs = (options.pollInterval ?? 2) * 1000;
    const deadline = Date.now() + timeoutMs;
    const started = parseAuthSession(await this.transport.json({ method: "POST", path: "/v1/auth/sessions", json: {} }));
    if (!started.authorizeUrl) {
      throw new CustodyError(null, "invalid_response", "Custody's answer has the wrong shape: no `authorize_url`");
    }
    const show: SignInUrlHandler = makeSignInUrlHandler(options.openBrowser ?? true, options.onAuthorizeUrl);
    await show(started.authorizeUrl);
    const path = `/v1/auth/sessions/${segment(started.sessionId)}`;
    for (;;) {
      const session = parseAuthSession(await this.transport.json({ method: "GET", path, signal: options.signal }));
      if (session.status === "complete") {
        if (!session.userToken) {
          throw new SignInFailed(null, "user_token_already_taken", "the sign-in completed, but its user token was already collected by another poll");
        }
        return makeSignIn(session.userToken, parseUser(session.user));
      }
      if (session.status === "failed") {
        throw new SignInFailed(null, session.error ?? "sign_in_failed", `the sign-in failed: ${session.error ?? "no reason given"}`);
      }
      if (session.status === "expired") {
        throw new SignInFailed(null, "session_expired", "the sign-in was not completed in time; start again");
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new SignInFailed(null, "sign_in_timeout", `the sign-in did not complete within ${timeoutMs / 1000} s`);
      }
      await sleep(Math.min(pollMs, remaining), options.signal);
    }
  }

  /**
   * Calls the provider's API for the user through Custody's proxy
   * (`{method} /v1/proxy/{provider}/{path}`): the access token never reaches this process.
   * Resolves to the provider's `Response` whatever its status (`X-Custody-Proxy: upstream`);
   * Custody's own refusals (no grant, policy, ...) throw the error classes.
   */
  async request(method: string, path: string, options: RequestOptions): Promise<Response>;
  async request(userToken: string | undefined, method: string, path: string, options: RequestOptions): Promise<Response>;
  async request(...args: unknown[]): Promise<Response> {
    const full = typeof args[2] === "string";
    const [given, method, path, options] = (full ? args : [undefined, ...args]) as [
      string | undefined,
      string,
      string,
      RequestOptions | undefined,
    ];
    if (!options?.provider) throw new TypeError("request() needs { provider }");
    if (typeof method !== "string" || typeof path !== "string") throw new TypeError("request() needs a method and a path");
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(options.headers ?? {})) {
      const lower = name.toLowerCase();
      if (RESERVED_PROXY_HEADERS.has(lower) || lower.startsWith("x-custody-")) {
        throw new TypeError(`request() sets ${name} itself; leave it out of headers`);
      }
      headers[name] = value;
    }
    if (options.grantId) headers["X-Custody-Grant-Id"] = options.grantId;
    const verb = method.toUpperCase();
    const relative = proxyPath(path);
    const joiner = relative.includes("?") ? "&" : "?";
    const query = queryString(options.params);
    const call: Call = {
      method: verb,
      path: `/v1/proxy/${segment(options.provider)}/${relative}${query ? joiner + query.slice(1) : ""}`,
      userToken: await this.userToken(given),
      headers,
      proxied: true,
      ...(options.json !== undefined ? { json: options.json } : {}),
      ...(options.body !== undefined ? { body: options.body } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    };
    const { response } = await this.transport.send(call, false);
    if (response.headers.get("x-custody-proxy") === null && !response.ok) {
      // Custody's own refusal: read the problem and throw its class.
      await this.transport.throwProblem(response);
    }
    return response;
  }
}

