/**
 * Errors thrown by the SDK: one class per problem `code`, all of them `instanceof CustodyError`.
 *
 * Custody answers every failure with an RFC 9457 problem (`code` stable, `detail` for humans and
 * never a secret). The mapping follows the SDK contract (surfaces.md, section 3): by code first,
 * then by status; codes it does not name throw the base class, so `catch (e) { e.code }` always
 * works. Messages are built only from the status, the code, the server's detail and the request
 * id: never from a header, a URL query or a body the caller sent, so no secret can end up in them.
 */
export class CustodyError extends Error {
    /** The HTTP status, or `null` when no answer arrived (connection error, timeout). */
    status;
    /** The problem's stable code (`policy_denied`, `grant_revoked`, ...). */
    code;
    /** The human explanation. */
    detail;
    /** Custody's `x-request-id`, to quote when asking the operator. */
    requestId;
    constructor(status, code, detail, requestId = null) {
        const statusText = status === null ? "" : `${status} `;
        const where = requestId ? ` (request id ${requestId})` : "";
        super(`${statusText}${code}: ${detail}${where}`);
        this.name = new.target.name;
        this.status = status;
        this.code = code;
        this.detail = detail;
        this.requestId = requestId;
    }
}
/** 401: the API key is missing or wrong. */
export class Unauthorized extends CustodyError {
}
/** 401 `invalid_user_token` or `user_token_missing`: sign the user in again. */
export class UserTokenInvalid extends CustodyError {
}
/** 403 `policy_denied`: the app's policy does not let this user use the provider. */
export class PolicyDenied extends CustodyError {
}
/**
 * 403 `handout_disabled`: the provider's policy is `proxy_only`, so its token is never handed
 * out; use `request()` instead. A `PolicyDenied` (an addition to the contract's list).
 */
export class HandoutDisabled extends PolicyDenied {
}
/** 403 `user_suspended`. */
export class UserSuspended extends CustodyError {
}
/** 403 `user_deprovisioned`: final; the user's grants are gone. */
export class UserDeprovisioned extends CustodyError {
}
/** 404: the grant, provider, session or route does not exist (for this app and user). */
export class NotFound extends CustodyError {
}
/** 410 `grant_revoked`: connect the provider again. */
export class GrantRevoked extends CustodyError {
}
/** 410 `reauth_required`: the provider rejected the refresh token; connect again. */
export class ReauthRequired extends CustodyError {
}
/** 502: the OAuth provider failed (token endpoint down, refresh answered garbage, ...). */
export class ProviderError extends CustodyError {
}
/** 503, or no answer at all: connection refused or reset, or a timeout (`status` null). */
export class Unavailable extends CustodyError {
}
/**
 * `authenticate()` ended without a user token (an addition to the contract's list). `code` is the
 * session's `error` (`access_denied`, `idp_error`, `code_exchange_failed`, `invalid_id_token`,
 * `user_suspended`, `user_deprovisioned`, `server_error`), `session_expired`,
 * `user_token_already_taken` (someone else polled the session first) or `sign_in_timeout`.
 */
export class SignInFailed extends CustodyError {
}
const BY_CODE = {
    invalid_user_token: UserTokenInvalid,
    user_token_missing: UserTokenInvalid,
    policy_denied: PolicyDenied,
    handout_disabled: HandoutDisabled,
    user_suspended: UserSuspended,
    user_deprovisioned: UserDeprovisioned,
    grant_revoked: GrantRevoked,
    reauth_required: ReauthRequired,
};
const BY_STATUS = {
    401: Unauthorized,
    404: NotFound,
    502: ProviderError,
    503: Unavailable,
};
/** The class for a problem: by code first, then by status, else `CustodyError`. */
export function errorClass(status, code) {
    return (Object.hasOwn(BY_CODE, code) ? BY_CODE[code] : undefined) ?? BY_STATUS[status] ?? CustodyError;
}
/** Builds the error for a non-2xx answer; `problem` is the parsed body, if it was JSON. */
export function errorFromProblem(status, problem, requestId) {
    let code = `http_${status}`;
    let detail = `HTTP ${status} without a problem body`;
    if (problem !== null && typeof problem === "object") {
        const fields = problem;
        if (typeof fields.code === "string" && fields.code)
            code = fields.code;
        const text = fields.detail ?? fields.title;
        if (typeof text === "string" && text)
            detail = text;
    }
    const Class = errorClass(status, code);
    return new Class(status, code, detail, requestId);
}
