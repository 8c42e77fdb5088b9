/**
 * The typed objects the calls return, parsed from Custody's snake_case JSON into camelCase.
 *
 * No validation library: each parser checks the fields it needs and throws `invalid_response`
 * when the answer has the wrong shape; unknown fields are ignored so a newer server does not
 * break an older SDK. Times are `Date`s. Objects that carry a secret (`Token.accessToken`,
 * `SignIn.userToken`) hide it from `console.log`/`util.inspect` and `JSON.stringify`, so logging
 * one never leaks it; the property itself is readable as usual.
 */
/** The signed-in user (`GET /v1/me`; `user_id` in JSON is `id` here). */
export interface User {
    id: string;
    subject: string;
    status: string;
    email: string | null;
    name: string | null;
    groups: string[];
    roles: string[];
    createdAt: Date | null;
    lastSeenAt: Date | null;
}
/** A handed-out provider access token (`POST /v1/token`). */
export interface Token {
    readonly accessToken: string;
    tokenType: string;
    expiresAt: Date | null;
    grantId: string;
    provider: string;
    scopes: string[];
}
/** A user's grant for a provider; never carries a token. */
export interface Grant {
    id: string;
    provider: string;
    status: string;
    scopes: string[];
    account: string | null;
    userId: string;
    createdAt: Date | null;
    updatedAt: Date | null;
    lastUsedAt: Date | null;
    revokedAt: Date | null;
}
/** Where to send the user's browser to connect a provider, and until when it works. */
export interface ConnectSession {
    connectUrl: string;
    expiresAt: Date;
}
/** The result of `authenticate()`: the user's token (the IdP's ID token) and the user. */
export interface SignIn {
    readonly userToken: string;
    user: User;
}
/** A sign-in session as `POST /v1/auth/sessions` and its polls answer it. */
export interface AuthSession {
    sessionId: string;
    authorizeUrl: string | null;
    status: string;
    expiresAt: Date | null;
    user: unknown;
    userToken: string | null;
    error: string | null;
}
export declare function parseUser(value: unknown): User;
export declare function parseToken(value: unknown): Token;
export declare function parseGrant(value: unknown): Grant;
export declare function parseGrantList(value: unknown): Grant[];
export declare function parseConnectSession(value: unknown): ConnectSession;
export declare function parseAuthSession(value: unknown): AuthSession;
export declare function makeSignIn(userToken: string, user: User): SignIn;
