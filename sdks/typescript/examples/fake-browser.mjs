// Plays the user's browser against the development fakes of `cargo xtask sdk-env` (its fake
// identity provider and fake OAuth provider), so the example and the tests run unattended.
//
// Only for those fakes: a real IdP wants a real person at a real browser. The fake IdP's login
// page is a form (POST /authorize) with hidden fields, a `username` field and a `Sign in` button
// (`action=sign-in`); the fake OAuth provider consents at once and redirects back.

const HIDDEN = /<input type="hidden" name="([^"]+)" value="([^"]*)"/gi;
const FORM_ACTION = /<form[^>]*action="([^"]*)"/i;

function unescapeHtml(text) {
  return text
    .replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&#x27;/g, "'")
    .replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
}

/**
 * Opens `authorizeUrl` (from authenticate()), submits the IdP's login form as `username`, and
 * follows the IdP's redirect to Custody's callback, which completes the sign-in session.
 */
export async function signInAtIdp(authorizeUrl, username) {
  const page = await fetch(authorizeUrl, { redirect: "manual" });
  const html = await page.text();
  if (page.status !== 200) throw new Error(`the IdP's login page answered ${page.status}`);
  const action = FORM_ACTION.exec(html);
  if (!action) throw new Error("the IdP's login page has no form");
  const fields = new URLSearchParams();
  for (const [, name, value] of html.matchAll(HIDDEN)) fields.append(name, unescapeHtml(value));
  fields.append("username", username);
  fields.append("action", "sign-in");
  const submitted = await fetch(new URL(unescapeHtml(action[1]), authorizeUrl), {
    method: "POST",
    body: fields,
    redirect: "manual",
  });
  await submitted.body?.cancel();
  const callback = submitted.headers.get("location");
  if (![302, 303].includes(submitted.status) || !callback) {
    throw new Error(`the IdP's login form answered ${submitted.status}`);
  }
  const done = await fetch(new URL(callback, submitted.url || authorizeUrl), { redirect: "manual" });
  await done.body?.cancel();
  if (done.status !== 200) throw new Error(`Custody's sign-in callback answered ${done.status}`);
}

/**
 * Follows `connectUrl` (from connect()) through the provider's consent back to `returnUrl`,
 * without opening it; returns the query Custody put on it (`status`, `grant_id` or `error`).
 */
export async function connectInBrowser(connectUrl, returnUrl) {
  const target = new URL(returnUrl);
  let url = new URL(connectUrl);
  for (let hop = 0; hop < 10; hop++) {
    if (url.origin === target.origin && url.pathname === target.pathname) {
      return Object.fromEntries(url.searchParams);
    }
    const answer = await fetch(url, { redirect: "manual" });
    await answer.body?.cancel();
    const location = answer.headers.get("location");
    if (![301, 302, 303, 307].includes(answer.status) || !location) {
      throw new Error(`${url.pathname} answered ${answer.status}, not a redirect`);
    }
    url = new URL(location, url);
  }
  throw new Error("too many redirects while connecting");
}
