/**
 * Showing the sign-in URL to the person at the keyboard: the system's browser opener (`open` on
 * macOS, `start` on Windows, `xdg-open` elsewhere) when there is a display, else a line on stderr.
 */
/** False where no browser can open: Linux/BSD without `DISPLAY` or `WAYLAND_DISPLAY`, or over SSH. */
export declare function browserAvailable(env?: NodeJS.ProcessEnv, platform?: NodeJS.Platform): boolean;
/** Starts the browser on `url`; resolves false when the opener could not be started. */
export declare function openInBrowser(url: string, platform?: NodeJS.Platform): Promise<boolean>;
/** Prints the URL for a person to open (stderr, so stdout stays the program's). */
export declare function printSignInUrl(url: string): void;
export type SignInUrlHandler = (url: string) => Promise<void>;
/** What `authenticate()` does with the sign-in URL: the caller's handler, the browser, or a printed line. */
export declare function makeSignInUrlHandler(openBrowser: boolean, onAuthorizeUrl?: (url: string) => void | Promise<void>): SignInUrlHandler;
