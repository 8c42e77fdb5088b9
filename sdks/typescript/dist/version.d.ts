/** The SDK's version, sent in `User-Agent` (keep in step with package.json; a test checks). */
export declare const VERSION = "0.1.0";
