// Plays the user's browser against the development fakes of `cargo xtask sdk-env` (its fake
// identity provider and fake OAuth provider), so the example and the tests run unattended.
//
// Only for those fakes: a real IdP wants a real person at a real browser. Like a browser, it
// follows redirects one by one and keeps cookies (Custody binds sign-in and connect flows to the
// browser with a cookie). The fake IdP's login page is a form with hidden fields, a `username`
// field and a `Sign in` button (`action=sign-in`); the fake OAuth provider consents at once.

const HIDDEN = /<input type="hidden" name="([^"]+)" value="([^"]*)"/gi;
const FORM_ACTION = /<form[^>]*action="([^"]*)"/i;

function unescapeHtml(text) {
  return text
    .replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&#x27;/g, "'")
    .replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
}

/** A browser's cookies, as far as these flows need them: by host, name and path. */
class Browser {
  cookies = [];

  async fetch(url, init = {}) {
    const target = new URL(url);
    const jar = this.cookies.filter((c) => c.host === target.host && target.pathname.startsWith(c.path));
    const headers = new Headers(init.headers ?? {});
    if (jar.length) headers.set("Cookie", jar.map((c) => `${c.name}=${c.value}`).join("; "));
    const answer = await fetch(target, { ...init, headers, redirect: "manual" });
    for (const line of answer.headers.getSetCookie?.() ?? []) {
      const [pair, ...attributes] = line.split(";");
      const eq = pair.indexOf("=");
      const name = pair.slice(0, eq).trim();
      const path = attributes.map((a) => a.trim()).find((a) => /^path=/i.test(a))?.slice(5) || "/";
      this.cookies = this.cookies.filter((c) => !(c.host === target.host && c.name === name && c.path === path));
      this.cookies.push({ host: target.host, name, value: pair.slice(eq + 1).trim(), path });
    }
    return answer;
  }

  /** GETs `url` and follows redirects until `stop(url)` or a non-redirect; returns both. */
  async follow(url, stop = () => false) {
    let here = new URL(url);
    for (let hop = 0; hop < 10; hop++) {
      if (stop(here)) return { url: here, answer: null };
      const answer = await this.fetch(here);
      const location = answer.headers.get("location");
      if (![301, 302, 303, 307, 308].includes(answer.status) || !location) return { url: here, answer };
      await answer.body?.cancel();
      here = new URL(location, here);
    }
    throw new Error(`too many redirects from ${new URL(url).pathname}`);
  }
}

/**
 * Opens `authorizeUrl` (from authenticate()), submits the IdP's login form as `username`, and
 * follows the IdP's redirect back to Custody's callback, which completes the sign-in session.
 */
export async function signInAtIdp(authorizeUrl, username) {
  const browser = new Browser();
  const { url: formUrl, answer: page } = await browser.follow(authorizeUrl);
  const html = await page.text();
  if (page.status !== 200) throw new Error(`the IdP's login page answered ${page.status}`);
  const action = FORM_ACTION.exec(html);
  if (!action) throw new Error("the IdP's login page has no form");
  const fields = new URLSearchParams();
  for (const [, name, value] of html.matchAll(HIDDEN)) fields.append(name, unescapeHtml(value));
  fields.append("username", username);
  fields.append("action", "sign-in");
  const submitted = await browser.fetch(new URL(unescapeHtml(action[1]), formUrl), { method: "POST", body: fields });
  await submitted.body?.cancel();
  const callback = submitted.headers.get("location");
  if (![302, 303].includes(submitted.status) || !callback) {
    throw new Error(`the IdP's login form answered ${submitted.status}`);
  }
  const { answer: done } = await browser.follow(new URL(callback, formUrl));
  await done.body?.cancel();
  if (done.status !== 200) throw new Error(`Custody's sign-in callback answered ${done.status}`);
}

/**
 * Follows `connectUrl` (from connect()) through the provider's consent back to `returnUrl`,
 * without opening it; returns the query Custody put on it (`status`, `grant_id` or `error`).
 */
export async function connectInBrowser(connectUrl, returnUrl) {
  const target = new URL(returnUrl);
  const { url, answer } = await new Browser().follow(
    connectUrl,
    (here) => here.origin === target.origin && here.pathname === target.pathname,
  );
  if (answer) throw new Error(`${url.pathname} answered ${answer.status}, not a redirect to the return URL`);
  return Object.fromEntries(url.searchParams);
}
