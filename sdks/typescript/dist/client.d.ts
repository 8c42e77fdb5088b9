/**
 * The `Custody` client: one method per call of the SDK contract (surfaces.md, section 3), each
 * returning a Promise, plus `request()` through the proxy (section 4).
 *
 * Every call that acts for a user takes the user's token first; when the client was built with
 * `userTokenGetter`, that argument may be left out (`me()`, `token({ provider })`,
 * `request("GET", "/user", { provider })`).
 */
import { type ConnectSession, type Grant, type SignIn, type Token, type User } from "./models.js";
export declare const DEFAULT_BASE_URL = "http://127.0.0.1:8080";
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
/**
 * The provider API path as sent after `/v1/proxy/{provider}/`. A `.` or `..` segment (plain or
 * percent-encoded) is refused here: `fetch` would resolve it before Custody could refuse it, and
 * the request would reach another Custody route instead of the provider.
 */
export declare function proxyPath(path: string): string;
export declare class Custody {
    private readonly transport;
    private readonly userTokenGetter;
    /** Custody's URL, without a trailing slash. */
    readonly baseUrl: string;
    constructor(options?: CustodyOptions);
    toJSON(): Record<string, string>;
    private userToken;
    /** The signed-in user (`GET /v1/me`). */
    me(userToken?: string): Promise<User>;
    /** A provider access token for the user, by provider or grant (`POST /v1/token`). */
    token(options: TokenOptions): Promise<Token>;
    token(userToken: string | undefined, options: TokenOptions): Promise<Token>;
    /** The user's grants, newest first (`GET /v1/grants`, every page). */
    grants(userToken?: string): Promise<Grant[]>;
    /** Revokes one of the user's grants (`DELETE /v1/grants/{id}`); returns it, `revoked`. */
    revokeGrant(grantId: string): Promise<Grant>;
    revokeGrant(userToken: string | undefined, grantId: string): Promise<Grant>;
    /** Starts connecting a provider: send the user's browser to `connectUrl` (`POST /v1/connect/sessions`). */
    connect(options: ConnectOptions): Promise<ConnectSession>;
    connect(userToken: string | undefined, options: ConnectOptions): Promise<ConnectSession>;
    /**
     * Signs a user in through the app's IdP: starts a sign-in session, opens the browser on its URL
     * (or prints it when headless or `openBrowser: false`; `onAuthorizeUrl` receives it instead),
     * then polls until the sign-in completes. Throws `SignInFailed` when it fails, expires or
     * `timeout` seconds pass.
     */
    authenticate(options?: AuthenticateOptions): Promise<SignIn>;
    /**
     * Calls the provider's API for the user through Custody's proxy
     * (`{method} /v1/proxy/{provider}/{path}`): the access token never reaches this process.
     * Resolves to the provider's `Response` whatever its status (`X-Custody-Proxy: upstream`);
     * Custody's own refusals (no grant, policy, ...) throw the error classes.
     */
    request(method: string, path: string, options: RequestOptions): Promise<Response>;
    request(userToken: string | undefined, method: string, path: string, options: RequestOptions): Promise<Response>;
}
