/**
 * Errors thrown by the SDK: one class per problem `code`, all of them `instanceof CustodyError`.
 *
 * Custody answers every failure with an RFC 9457 problem (`code` stable, `detail` for humans and
 * never a secret). The mapping follows the SDK contract (surfaces.md, section 3): by code first,
 * then by status; codes it does not name throw the base class, so `catch (e) { e.code }` always
 * works. Messages are built only from the status, the code, the server's detail and the request
 * id: never from a header, a URL query or a body the caller sent, so no secret can end up in them.
 */
export declare class CustodyError extends Error {
    /** The HTTP status, or `null` when no answer arrived (connection error, timeout). */
    readonly status: number | null;
    /** The problem's stable code (`policy_denied`, `grant_revoked`, ...). */
    readonly code: string;
    /** The human explanation. */
    readonly detail: string;
    /** Custody's `x-request-id`, to quote when asking the operator. */
    readonly requestId: string | null;
    constructor(status: number | null, code: string, detail: string, requestId?: string | null);
}
/** 401: the API key is missing or wrong. */
export declare class Unauthorized extends CustodyError {
}
/** 401 `invalid_user_token` or `user_token_missing`: sign the user in again. */
export declare class UserTokenInvalid extends CustodyError {
}
/** 403 `policy_denied`: the app's policy does not let this user use the provider. */
export declare class PolicyDenied extends CustodyError {
}
/**
 * 403 `handout_disabled`: the provider's policy is `proxy_only`, so its token is never handed
 * out; use `request()` instead. A `PolicyDenied` (an addition to the contract's list).
 */
export declare class HandoutDisabled extends PolicyDenied {
}
/** 403 `user_suspended`. */
export declare class UserSuspended extends CustodyError {
}
/** 403 `user_deprovisioned`: final; the user's grants are gone. */
export declare class UserDeprovisioned extends CustodyError {
}
/** 404: the grant, provider, session or route does not exist (for this app and user). */
export declare class NotFound extends CustodyError {
}
/** 410 `grant_revoked`: connect the provider again. */
export declare class GrantRevoked extends CustodyError {
}
/** 410 `reauth_required`: the provider rejected the refresh token; connect again. */
export declare class ReauthRequired extends CustodyError {
}
/** 502: the OAuth provider failed (token endpoint down, refresh answered garbage, ...). */
export declare class ProviderError extends CustodyError {
}
/** 503, or no answer at all: connection refused or reset, or a timeout (`status` null). */
export declare class Unavailable extends CustodyError {
}
/**
 * `authenticate()` ended without a user token (an addition to the contract's list). `code` is the
 * session's `error` (`access_denied`, `idp_error`, `code_exchange_failed`, `invalid_id_token`,
 * `user_suspended`, `user_deprovisioned`, `server_error`), `session_expired`,
 * `user_token_already_taken` (someone else polled the session first) or `sign_in_timeout`.
 */
export declare class SignInFailed extends CustodyError {
}
type ErrorClass = new (status: number | null, code: string, detail: string, requestId?: string | null) => CustodyError;
/** The class for a problem: by code first, then by status, else `CustodyError`. */
export declare function errorClass(status: number, code: string): ErrorClass;
/** Builds the error for a non-2xx answer; `problem` is the parsed body, if it was JSON. */
export declare function errorFromProblem(status: number, problem: unknown, requestId: string | null): CustodyError;
export {};
