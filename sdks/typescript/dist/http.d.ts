/**
 * Sending one logical call to Custody: headers, the per-attempt timeout, retries with backoff for
 * idempotent calls, and turning answers into JSON or errors.
 *
 * Retries happen only for idempotent calls (GET, HEAD, OPTIONS, PUT, DELETE) and only when the
 * request cannot have done anything twice: a 503 from Custody itself (not a proxied provider's
 * 503) or a connection that failed. A timeout is not retried: the server may still be working on
 * the call, and retrying would multiply the caller's wait.
 */
export declare const USER_AGENT = "custody-typescript/0.1.0";
export declare const IDEMPOTENT_METHODS: ReadonlySet<string>;
export interface TransportSettings {
    apiKey: string;
    baseUrl: string;
    timeoutMs: number;
    maxRetries: number;
    backoffMs: number;
    fetch: typeof fetch;
}
export interface Call {
    method: string;
    /** Path and query, starting with `/`, already encoded. */
    path: string;
    userToken?: string;
    json?: unknown;
    body?: string | Uint8Array;
    headers?: Record<string, string>;
    /** Proxied calls return the provider's answer whatever its status (section 4). */
    proxied?: boolean;
    /** The caller's own signal, combined with the timeout. */
    signal?: AbortSignal;
}
/** True when Custody refused the call itself (a proxied provider's answers carry `X-Custody-Proxy`). */
export declare function isCustodyAnswer(call: Call, response: Response): boolean;
/** Milliseconds before retry number `attempt` (0-based): `Retry-After` when given, else exponential with jitter. */
export declare function backoffDelay(attempt: number, backoffMs: number, retryAfter: string | null): number;
declare function sleep(ms: number, signal?: AbortSignal): Promise<void>;
export { sleep };
export declare class Transport {
    readonly settings: TransportSettings;
    constructor(settings: TransportSettings);
    headers(call: Call): Headers;
    /**
     * Sends the call, retrying as the module doc says, and returns the answer (any status). With
     * `keepTimeoutForBody` the timeout also covers reading the body; otherwise it stops once the
     * headers arrived (a proxied stream is the caller's to read, at its own pace).
     */
    send(call: Call, keepTimeoutForBody: boolean): Promise<{
        response: Response;
        done: () => void;
    }>;
    /** Sends the call and returns its JSON answer, or throws the error class for a refusal. */
    json(call: Call): Promise<unknown>;
    /** Reads a refusal's problem body and throws its error class. */
    throwProblem(response: Response): Promise<never>;
    private readText;
}
