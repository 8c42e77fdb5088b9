/**
 * `@custody/sdk`: the Custody client for Node 18+ (ESM, built on the platform's `fetch`, no
 * runtime dependency). See README.md; the contract is surfaces.md, sections 3 and 4.
 */
export { Custody, DEFAULT_BASE_URL, } from "./client.js";
export { CustodyError, GrantRevoked, HandoutDisabled, NotFound, PolicyDenied, ProviderError, ReauthRequired, SignInFailed, Unauthorized, Unavailable, UserDeprovisioned, UserSuspended, UserTokenInvalid, } from "./errors.js";
export { USER_AGENT } from "./http.js";
export { VERSION } from "./version.js";
