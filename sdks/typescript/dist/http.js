/**
 * Sending one logical call to Custody: headers, the per-attempt timeout, retries with backoff for
 * idempotent calls, and turning answers into JSON or errors.
 *
 * Retries happen only for idempotent calls (GET, HEAD, OPTIONS, PUT, DELETE) and only when the
 * request cannot have done anything twice: a 503 from Custody itself (not a proxied provider's
 * 503) or a connection that failed. A timeout is not retried: the server may still be working on
 * the call, and retrying would multiply the caller's wait.
 */
import { CustodyError, Unavailable, errorFromProblem } from "./errors.js";
import { VERSION } from "./version.js";
export const USER_AGENT = `custody-typescript/${VERSION}`;
export const IDEMPOTENT_METHODS = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]);
const MAX_BACKOFF_MS = 8_000;
/** True when Custody refused the call itself (a proxied provider's answers carry `X-Custody-Proxy`). */
export function isCustodyAnswer(call, response) {
    return !call.proxied || response.headers.get("x-custody-proxy") === null;
}
/** Milliseconds before retry number `attempt` (0-based): `Retry-After` when given, else exponential with jitter. */
export function backoffDelay(attempt, backoffMs, retryAfter) {
    if (retryAfter !== null) {
        const seconds = Number(retryAfter);
        if (Number.isFinite(seconds))
            return Math.min(Math.max(seconds * 1000, 0), MAX_BACKOFF_MS);
    }
    const base = backoffMs * 2 ** attempt;
    return Math.min(base / 2 + Math.random() * (base / 2), MAX_BACKOFF_MS);
}
function sleep(ms, signal) {
    return new Promise((resolve, reject) => {
        if (signal?.aborted)
            return reject(signal.reason);
        const timer = setTimeout(() => {
            signal?.removeEventListener("abort", onAbort);
            resolve();
        }, ms);
        const onAbort = () => {
            clearTimeout(timer);
            reject(signal?.reason);
        };
        signal?.addEventListener("abort", onAbort, { once: true });
    });
}
export { sleep };
/** Why fetch failed, in words that never carry the URL's query or a header. */
function connectionReason(error) {
    const cause = error?.cause;
    if (cause && typeof cause.code === "string")
        return cause.code;
    if (error instanceof Error && error.name !== "TypeError")
        return error.name;
    return "the connection failed";
}
export class Transport {
    settings;
    constructor(settings) {
        this.settings = settings;
    }
    headers(call) {
        const headers = new Headers(call.headers ?? {});
        headers.set("Authorization", `Bearer ${this.settings.apiKey}`);
        if (!headers.has("User-Agent"))
            headers.set("User-Agent", USER_AGENT);
        if (!call.proxied)
            headers.set("Accept", "application/json");
        if (call.userToken !== undefined)
            headers.set("X-User-Token", call.userToken);
        if (call.json !== undefined && !headers.has("Content-Type"))
            headers.set("Content-Type", "application/json");
        return headers;
    }
    /**
     * Sends the call, retrying as the module doc says, and returns the answer (any status). With
     * `keepTimeoutForBody` the timeout also covers reading the body; otherwise it stops once the
     * headers arrived (a proxied stream is the caller's to read, at its own pace).
     */
    async send(call, keepTimeoutForBody) {
        const { baseUrl, maxRetries, backoffMs, timeoutMs } = this.settings;
        const method = call.method.toUpperCase();
        const retryable = IDEMPOTENT_METHODS.has(method);
        const url = `${baseUrl}${call.path}`;
        const origin = new URL(baseUrl).origin;
        const body = call.json !== undefined ? JSON.stringify(call.json) : call.body;
        for (let attempt = 0;; attempt++) {
            const controller = new AbortController();
            let timedOut = false;
            const timer = setTimeout(() => {
                timedOut = true;
                controller.abort(new Error("timeout"));
            }, timeoutMs);
            const onCallerAbort = () => controller.abort(call.signal?.reason);
            if (call.signal?.aborted)
                onCallerAbort();
            call.signal?.addEventListener("abort", onCallerAbort, { once: true });
            const done = () => {
                clearTimeout(timer);
                call.signal?.removeEventListener("abort", onCallerAbort);
            };
            let response;
            try {
                response = await this.settings.fetch(url, {
                    method,
                    headers: this.headers(call),
                    body: body ?? null,
                    signal: controller.signal,
                    redirect: "manual",
                });
            }
            catch (error) {
                done();
                if (timedOut) {
                    throw new Unavailable(null, "timeout", `Custody at ${origin} did not answer within ${timeoutMs / 1000} s`);
                }
                if (call.signal?.aborted)
                    throw call.signal.reason;
                if (retryable && attempt < maxRetries) {
                    await sleep(backoffDelay(attempt, backoffMs, null), call.signal);
                    continue;
                }
                throw new Unavailable(null, "connection_error", `could not reach Custody at ${origin}: ${connectionReason(error)}`);
            }
            if (response.status === 503 && retryable && attempt < maxRetries && isCustodyAnswer(call, response)) {
                done();
                await response.body?.cancel().catch(() => undefined);
                await sleep(backoffDelay(attempt, backoffMs, response.headers.get("retry-after")), call.signal);
                continue;
            }
            if (!keepTimeoutForBody)
                done();
            return { response, done };
        }
    }
    /** Sends the call and returns its JSON answer, or throws the error class for a refusal. */
    async json(call) {
        const { response, done } = await this.send(call, true);
        let text;
        try {
            text = await this.readText(response);
        }
        finally {
            done();
        }
        const requestId = response.headers.get("x-request-id");
        const parsed = parseJson(text);
        if (!response.ok)
            throw errorFromProblem(response.status, parsed ?? null, requestId);
        if (parsed === undefined) {
            throw new CustodyError(response.status, "invalid_response", "Custody's answer is not JSON", requestId);
        }
        return parsed;
    }
    /** Reads a refusal's problem body and throws its error class. */
    async throwProblem(response) {
        const text = await this.readText(response);
        throw errorFromProblem(response.status, parseJson(text) ?? null, response.headers.get("x-request-id"));
    }
    async readText(response) {
        try {
            return await response.text();
        }
        catch {
            throw new Unavailable(null, "connection_error", `Custody's answer broke off or did not arrive within ${this.settings.timeoutMs / 1000} s`);
        }
    }
}
/** The JSON in `text`: `null` for an empty body, `undefined` when it is not JSON. */
function parseJson(text) {
    if (text.length === 0)
        return null;
    try {
        return JSON.parse(text);
    }
    catch {
        return undefined;
    }
}
