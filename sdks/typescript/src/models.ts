/**
 * The typed objects the calls return, parsed from Custody's snake_case JSON into camelCase.
 *
 * No validation library: each parser checks the fields it needs and throws `invalid_response`
 * when the answer has the wrong shape; unknown fields are ignored so a newer server does not
 * break an older SDK. Times are `Date`s. Objects that carry a secret (`Token.accessToken`,
 * `SignIn.userToken`) hide it from `console.log`/`util.inspect` and `JSON.stringify`, so logging
 * one never leaks it; the property itself is readable as usual.
 */

import { CustodyError } from "./errors.js";

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

function invalid(what: string): CustodyError {
  return new CustodyError(null, "invalid_response", `Custody's answer has the wrong shape: ${what}`);
}

function record(value: unknown, what: string): Record<string, unknown> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw invalid(`${what} is not an object`);
  return value as Record<string, unknown>;
}

function str(data: Record<string, unknown>, field: string): string {
  const value = data[field];
  if (typeof value !== "string") throw invalid(`\`${field}\` is not a string`);
  return value;
}

function optStr(data: Record<string, unknown>, field: string): string | null {
  const value = data[field];
  if (value === undefined || value === null) return null;
  if (typeof value !== "string") throw invalid(`\`${field}\` is not a string`);
  return value;
}

function strings(data: Record<string, unknown>, field: string): string[] {
  const value = data[field];
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value) || !value.every((item) => typeof item === "string")) {
    throw invalid(`\`${field}\` is not a list of strings`);
  }
  return [...(value as string[])];
}

function time(data: Record<string, unknown>, field: string): Date | null {
  const text = optStr(data, field);
  if (text === null) return null;
  const parsed = new Date(text);
  if (Number.isNaN(parsed.getTime())) throw invalid(`\`${field}\` is not an RFC 3339 time`);
  return parsed;
}

/** Puts a secret on `target` as a non-enumerable property: readable, but not logged or serialised. */
function hideSecret<T extends object>(target: T, field: string, secret: string): T {
  Object.defineProperty(target, field, { value: secret, enumerable: false, writable: false });
  Object.defineProperty(target, Symbol.for("nodejs.util.inspect.custom"), {
    value: function (this: T) {
      return { ...this, [field]: "[hidden]" };
    },
    enumerable: false,
  });
  return target;
}

export function parseUser(value: unknown): User {
  const data = record(value, "the user");
  const id = optStr(data, "user_id") ?? optStr(data, "id");
  if (id === null) throw invalid("the user has no `user_id`");
  return {
    id,
    subject: str(data, "subject"),
    status: str(data, "status"),
    email: optStr(data, "email"),
    name: optStr(data, "name"),
    groups: strings(data, "groups"),
    roles: strings(data, "roles"),
    createdAt: time(data, "created_at"),
    lastSeenAt: time(data, "last_seen_at"),
  };
}

export function parseToken(value: unknown): Token {
  const data = record(value, "the token");
  const token = {
    tokenType: optStr(data, "token_type") ?? "Bearer",
    expiresAt: time(data, "expires_at"),
    grantId: str(data, "grant_id"),
    provider: str(data, "provider"),
    scopes: strings(data, "scopes"),
  };
  return hideSecret(token, "accessToken", str(data, "access_token")) as Token;
}

export function parseGrant(value: unknown): Grant {
  const data = record(value, "the grant");
  return {
    id: str(data, "id"),
    provider: str(data, "provider"),
    status: str(data, "status"),
    scopes: strings(data, "scopes"),
    account: optStr(data, "account"),
    userId: str(data, "user_id"),
    createdAt: time(data, "created_at"),
    updatedAt: time(data, "updated_at"),
    lastUsedAt: time(data, "last_used_at"),
    revokedAt: time(data, "revoked_at"),
  };
}

export function parseGrantList(value: unknown): Grant[] {
  const items = Array.isArray(value) ? value : record(value, "the grant list").items;
  if (!Array.isArray(items)) throw invalid("the grant list has no `items`");
  return items.map(parseGrant);
}

export function parseConnectSession(value: unknown): ConnectSession {
  const data = record(value, "the connect session");
  const expiresAt = time(data, "expires_at");
  if (expiresAt === null) throw invalid("the connect session has no `expires_at`");
  return { connectUrl: str(data, "connect_url"), expiresAt };
}

export function parseAuthSession(value: unknown): AuthSession {
  const data = record(value, "the sign-in session");
  return {
    sessionId: str(data, "session_id"),
    authorizeUrl: optStr(data, "authorize_url"),
    status: optStr(data, "status") ?? "pending",
    expiresAt: time(data, "expires_at"),
    user: data.user ?? null,
    userToken: optStr(data, "user_token"),
    error: optStr(data, "error"),
  };
}

export function makeSignIn(userToken: string, user: User): SignIn {
  return hideSecret({ user }, "userToken", userToken) as SignIn;
}
