/**
 * Showing the sign-in URL to the person at the keyboard: the system's browser opener (`open` on
 * macOS, `start` on Windows, `xdg-open` elsewhere) when there is a display, else a line on stderr.
 */
import { spawn } from "node:child_process";
/** False where no browser can open: Linux/BSD without `DISPLAY` or `WAYLAND_DISPLAY`, or over SSH. */
export function browserAvailable(env = process.env, platform = process.platform) {
    if (platform === "darwin" || platform === "win32")
        return !env.SSH_CONNECTION || Boolean(env.DISPLAY);
    return Boolean(env.DISPLAY || env.WAYLAND_DISPLAY);
}
function opener(platform, url) {
    if (platform === "darwin")
        return ["open", [url]];
    // `start` is a cmd built-in; the empty string is the window title it would take from a quoted URL.
    if (platform === "win32")
        return ["cmd", ["/c", "start", "", url.replace(/&/g, "^&")]];
    return ["xdg-open", [url]];
}
/** Starts the browser on `url`; resolves false when the opener could not be started. */
export function openInBrowser(url, platform = process.platform) {
    const [command, args] = opener(platform, url);
    return new Promise((resolve) => {
        try {
            const child = spawn(command, args, { stdio: "ignore", detached: true });
            child.once("error", () => resolve(false));
            child.once("spawn", () => {
                child.unref();
                resolve(true);
            });
        }
        catch {
            resolve(false);
        }
    });
}
/** Prints the URL for a person to open (stderr, so stdout stays the program's). */
export function printSignInUrl(url) {
    process.stderr.write(`To sign in, open this URL in a browser:\n  ${url}\n`);
}
/** What `authenticate()` does with the sign-in URL: the caller's handler, the browser, or a printed line. */
export function makeSignInUrlHandler(openBrowser, onAuthorizeUrl) {
    return async (url) => {
        if (onAuthorizeUrl)
            return void (await onAuthorizeUrl(url));
        if (openBrowser && browserAvailable() && (await openInBrowser(url))) {
            process.stderr.write(`Opened your browser to sign in. If it did not open, visit:\n  ${url}\n`);
            return;
        }
        printSignInUrl(url);
    };
}
