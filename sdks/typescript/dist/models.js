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
function invalid(what) {
    return new CustodyError(null, "invalid_response", `Custody's answer has the wrong shape: ${what}`);
}
function record(value, what) {
    if (value === null || typeof value !== "object" || Array.isArray(value))
        throw invalid(`${what} is not an object`);
    return value;
}
function str(data, field) {
    const value = data[field];
    if (typeof value !== "string")
        throw invalid(`\`${field}\` is not a string`);
    return value;
}
function optStr(data, field) {
    const value = data[field];
    if (value === undefined || value === null)
        return null;
    if (typeof value !== "string")
        throw invalid(`\`${field}\` is not a string`);
    return value;
}
function strings(data, field) {
    const value = data[field];
    if (value === undefined || value === null)
        return [];
    if (!Array.isArray(value) || !value.every((item) => typeof item === "string")) {
        throw invalid(`\`${field}\` is not a list of strings`);
    }
    return [...value];
}
function time(data, field) {
    const text = optStr(data, field);
    if (text === null)
        return null;
    const parsed = new Date(text);
    if (Number.isNaN(parsed.getTime()))
        throw invalid(`\`${field}\` is not an RFC 3339 time`);
    return parsed;
}
/** Puts a secret on `target` as a non-enumerable property: readable, but not logged or serialised. */
function hideSecret(target, field, secret) {
    Object.defineProperty(target, field, { value: secret, enumerable: false, writable: false });
    Object.defineProperty(target, Symbol.for("nodejs.util.inspect.custom"), {
        value: function () {
            return { ...this, [field]: "[hidden]" };
        },
        enumerable: false,
    });
    return target;
}
export function parseUser(value) {
    const data = record(value, "the user");
    const id = optStr(data, "user_id") ?? optStr(data, "id");
    if (id === null)
        throw invalid("the user has no `user_id`");
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
export function parseToken(value) {
    const data = record(value, "the token");
    const token = {
        tokenType: optStr(data, "token_type") ?? "Bearer",
        expiresAt: time(data, "expires_at"),
        grantId: str(data, "grant_id"),
        provider: str(data, "provider"),
        scopes: strings(data, "scopes"),
    };
    return hideSecret(token, "accessToken", str(data, "access_token"));
}
export function parseGrant(value) {
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
export function parseGrantList(value) {
    const items = Array.isArray(value) ? value : record(value, "the grant list").items;
    if (!Array.isArray(items))
        throw invalid("the grant list has no `items`");
    return items.map(parseGrant);
}
export function parseConnectSession(value) {
    const data = record(value, "the connect session");
    const expiresAt = time(data, "expires_at");
    if (expiresAt === null)
        throw invalid("the connect session has no `expires_at`");
    return { connectUrl: str(data, "connect_url"), expiresAt };
}
export function parseAuthSession(value) {
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
export function makeSignIn(userToken, user) {
    return hideSecret({ user }, "userToken", userToken);
}
