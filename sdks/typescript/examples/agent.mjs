#!/usr/bin/env node
// An agent-style script on @custody/sdk: sign the user in through the browser (authenticate()),
// connect a provider, then call the provider's API through Custody's proxy (request()), so the
// provider's access token never reaches this process.
//
//   CUSTODY_URL=http://127.0.0.1:8080 CUSTODY_API_KEY=ck_... \
//     node examples/agent.mjs --provider github --path /user
//
// --auto (or CUSTODY_EXAMPLE_AUTO=1) plays the browser itself against the development fakes of
// `cargo xtask sdk-env` (fake-browser.mjs); that is how CI runs it. Without it, a person signs
// in and consents in a real browser (or, headless, opens the printed URLs).
import { parseArgs } from "node:util";
import { Custody, CustodyError } from "@custody/sdk";
import { connectInBrowser, signInAtIdp } from "./fake-browser.mjs";

const { values: args } = parseArgs({
  options: {
    provider: { type: "string", default: "github" },
    path: { type: "string", default: "/user" },
    "return-url": { type: "string", default: process.env.CUSTODY_RETURN_URL ?? "http://127.0.0.1:9/connected" },
    auto: { type: "boolean", default: process.env.CUSTODY_EXAMPLE_AUTO === "1" },
    // For servers without the proxy route (before issue 14's proxy): stop after connecting.
    "skip-request": { type: "boolean", default: false },
  },
});

async function main() {
  const custody = new Custody(); // CUSTODY_API_KEY and CUSTODY_URL
  let browser = Promise.resolve();

  // 1. Sign the user in: the browser goes to the app's IdP; we poll until it comes back.
  const signIn = await custody.authenticate({
    timeout: 300,
    pollInterval: args.auto ? 0.2 : 2,
    ...(args.auto ? { onAuthorizeUrl: (url) => void (browser = signInAtIdp(url, "agent-demo")) } : {}),
  });
  await browser;
  console.log(`signed in as ${signIn.user.subject} (${signIn.user.email ?? "no email"})`);

  // From here on, calls take the user's token from the getter.
  const agent = new Custody({ userTokenGetter: () => signIn.userToken });

  // 2. Connect the provider unless the user already has an active grant for it.
  let grant = (await agent.grants()).find((g) => g.provider === args.provider && g.status === "active");
  if (!grant) {
    const session = await agent.connect({ provider: args.provider, returnUrl: args["return-url"] });
    if (args.auto) {
      const outcome = await connectInBrowser(session.connectUrl, args["return-url"]);
      if (outcome.status !== "connected") throw new Error(`connecting failed: ${outcome.error}`);
    } else {
      console.log(`Connect ${args.provider} in your browser:\n  ${session.connectUrl}`);
    }
    const deadline = session.expiresAt.getTime();
    while (!grant && Date.now() < deadline) {
      grant = (await agent.grants()).find((g) => g.provider === args.provider && g.status === "active");
      if (!grant) await new Promise((resolve) => setTimeout(resolve, 2000));
    }
    if (!grant) throw new Error(`${args.provider} was not connected in time`);
  }
  console.log(`connected ${args.provider} (grant ${grant.id}, scopes ${grant.scopes.join(" ") || "none"})`);

  if (args["skip-request"]) {
    console.log("--skip-request: not calling the provider's API through the proxy");
    return;
  }

  // 3. Call the provider's API as the user, through Custody: the token stays in Custody.
  const answer = await agent.request("GET", args.path, { provider: args.provider });
  const body = await answer.text();
  console.log(`GET ${args.path} -> ${answer.status} (${answer.headers.get("x-custody-proxy")})`);
  console.log(body.length > 500 ? `${body.slice(0, 500)}…` : body);
  if (!answer.ok) process.exitCode = 1;
}

main().catch((error) => {
  if (error instanceof CustodyError) {
    console.error(`${error.name}: ${error.message}`);
  } else {
    console.error(error);
  }
  process.exitCode = 1;
});
