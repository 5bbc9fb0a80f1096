// End-to-end test of the web page in Debian's headless Chromium, against the release server
// on 127.0.0.1 with a fresh SQLite database. Two browser profiles (separate user-data-dirs)
// sign in as the same person; the first signs the second out. A screenshot is taken at each
// step into a folder printed at the start.
//
// Run: cargo build --release && (cd tests/oidc && npm ci) && (cd tests/e2e && npm ci && npm test)
// Needs /usr/bin/chromium (apt-get install chromium). LATCHKEY_BIN overrides the server binary.
// The OpenID provider is tests/oidc/provider.mjs (oidc-provider), started here on a free port.

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { createServer as createHttpServer } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

const root = resolve(import.meta.dirname, "..", "..");
const targetDir = process.env.CARGO_TARGET_DIR || join(root, "target");
const serverBin = process.env.LATCHKEY_BIN || join(targetDir, "release", "latchkey");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const shots = join(targetDir, "e2e-screenshots", new Date().toISOString().replace(/[:.]/g, "-"));
mkdirSync(shots, { recursive: true });
console.log(`screenshots: ${shots}`);

const results = [];
async function step(name, fn) {
  try {
    await fn();
    results.push([name, true]);
    console.log(`ok - ${name}`);
  } catch (error) {
    results.push([name, false]);
    console.log(`not ok - ${name}\n  ${String(error && error.stack || error).split("\n").join("\n  ")}`);
    throw error;
  }
}

function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
    srv.on("error", fail);
  });
}

async function waitForHealth(base, server) {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (server.exitCode !== null) throw new Error(`server exited with ${server.exitCode}`);
    try {
      const r = await fetch(`${base}/api/health`);
      if (r.ok) return;
    } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("server did not become healthy");
}

const flags = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

async function profile(name, viewport) {
  const dir = mkdtempSync(join(tmpdir(), `latchkey-e2e-${name}-`));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: chromiumPath, headless: true, args: flags, viewport,
  });
  const page = context.pages()[0] || (await context.newPage());
  return { context, page, dir };
}

let n = 0;
async function shot(page, label, description) {
  n += 1;
  const file = join(shots, `${String(n).padStart(2, "0")}-${label}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`  screenshot ${file}: ${description}`);
}

async function sessionRows(page) {
  return page.locator("#sessions li").count();
}


// RFC 6238 (SHA-1, 6 digits, 30 s) from a base32 secret, as an authenticator app computes it:
// the code of the step `offset` steps from now.
function totp(base32, offset = 0) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of base32.replace(/=+$/, "")) bits += alphabet.indexOf(c).toString(2).padStart(5, "0");
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 30_000) + offset));
  const mac = createHmac("sha1", key).update(counter).digest();
  const at = mac[mac.length - 1] & 15;
  return String((mac.readUInt32BE(at) & 0x7fffffff) % 1_000_000).padStart(6, "0");
}

// Waits until the current 30-second step has at least 5 seconds left.
async function steadyStep() {
  while ((Date.now() / 1000) % 30 > 25) await new Promise((r) => setTimeout(r, 200));
}

const email = `e2e-${Date.now()}@example.com`;
const password = "correct horse battery";
const dataDir = mkdtempSync(join(tmpdir(), "latchkey-e2e-db-"));
const port = await freePort();
const base = `http://127.0.0.1:${port}`;
// Two other origins: an application listed in allowed_origins and one that is not. Each serves
// a page that asks latchkey who is signed in, with the browser's cookie.
const appPort = await freePort();
const otherPort = await freePort();
const appOrigin = `http://127.0.0.1:${appPort}`;
const otherOrigin = `http://127.0.0.1:${otherPort}`;
const probe = `<!doctype html><title>asking</title><script>
fetch("${base}/api/auth/me", { credentials: "include" })
  .then((r) => r.json()).then((j) => { document.title = "me:" + j.user.email; })
  .catch(() => { document.title = "blocked"; });
</script>`;
const sites = [appPort, otherPort].map((p) => {
  const site = createHttpServer((req, res) => {
    res.setHeader("content-type", "text/html");
    res.end(req.url.startsWith("/back") ? "<!doctype html><title>back in the app</title>" : probe);
  });
  site.listen(p, "127.0.0.1");
  return site;
});
// A small SMTP server for the mails latchkey sends (verification, reset): it keeps each
// message's text part, decoded.
const mails = [];
const smtpPort = await freePort();
const smtp = createServer((socket) => {
  let buffer = "";
  let inData = false;
  socket.write("220 e2e ESMTP\r\n");
  socket.on("data", (chunk) => {
    buffer += chunk.toString("latin1");
    for (;;) {
      if (inData) {
        const end = buffer.indexOf("\r\n.\r\n");
        if (end < 0) return;
        const data = buffer.slice(0, end);
        buffer = buffer.slice(end + 5);
        inData = false;
        const part = data.split("\r\n--").find((p) => /content-type: text\/plain/i.test(p));
        const body = part ? part.split("\r\n\r\n").slice(1).join("").replace(/\s+/g, "") : "";
        mails.push(Buffer.from(body, "base64").toString("utf8"));
        socket.write("250 OK\r\n");
        continue;
      }
      const nl = buffer.indexOf("\r\n");
      if (nl < 0) return;
      const line = buffer.slice(0, nl).toUpperCase();
      buffer = buffer.slice(nl + 2);
      if (line.startsWith("EHLO") || line.startsWith("HELO")) socket.write("250 e2e\r\n");
      else if (line === "DATA") { inData = true; socket.write("354 go ahead\r\n"); }
      else if (line === "QUIT") { socket.end("221 bye\r\n"); return; }
      else socket.write("250 OK\r\n");
    }
  });
  socket.on("error", () => {});
});
smtp.listen(smtpPort, "127.0.0.1");

// The token of the newest mailed `#kind=` link, waiting for it (at most 10 s).
async function mailedToken(kind, after) {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    for (const text of mails.slice(after)) {
      const found = new RegExp(`#${kind}=([A-Za-z0-9_-]{43})`).exec(text);
      if (found) return found[1];
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no ${kind} mail arrived`);
}

// A real OpenID provider (tests/oidc/provider.mjs), for "Sign in with Test Provider".
const opPort = await freePort();
const issuer = `http://127.0.0.1:${opPort}`;
const provider = spawn(process.execPath, [join(root, "tests", "oidc", "provider.mjs")], {
  env: {
    ...process.env, PORT: String(opPort), CLIENT_ID: "latchkey-e2e", CLIENT_SECRET: "an-e2e-client-secret",
    REDIRECT_URIS: `${base}/api/auth/oidc/test/callback`, KEY_ID: "e2e",
  },
  stdio: ["ignore", "ignore", "inherit"],
});
async function waitForProvider() {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (provider.exitCode !== null) throw new Error(`the OpenID provider exited with ${provider.exitCode}`);
    try {
      if ((await fetch(`${issuer}/.well-known/openid-configuration`)).ok) return;
    } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("the OpenID provider did not come up");
}

const server = spawn(serverBin, [], {
  cwd: dataDir,
  env: {
    ...process.env, ROCKET_PORT: String(port), ROCKET_ADDRESS: "127.0.0.1",
    DATABASE_URL: `sqlite://${join(dataDir, "e2e.db")}`,
    ROCKET_ALLOWED_ORIGINS: JSON.stringify([appOrigin]),
    RUST_LOG: "warn",
    ROCKET_SMTP_URL: `smtp://127.0.0.1:${smtpPort}`,
    ROCKET_MAIL_FROM: "latchkey <auth@example.test>",
    ROCKET_PUBLIC_URL: base,
    ROCKET_OIDC_PROVIDERS: `[{id="test",name="Test Provider",issuer="${issuer}",client_id="latchkey-e2e",client_secret="an-e2e-client-secret"}]`,
  },
  stdio: ["ignore", "ignore", "inherit"],
});

let first, second;
let failed = false;
try {
  await waitForProvider();
  await waitForHealth(base, server);
  first = await profile("first", { width: 1100, height: 900 });
  second = await profile("second", { width: 375, height: 812 });
  const a = first.page;
  const b = second.page;

  await step("register shows the account page", async () => {
    await a.goto(base);
    await a.locator("#auth").waitFor();
    await a.click("#tab-register");
    await a.fill("#register-name", "Ada Lovelace");
    await a.fill("#register-email", "not-an-email");
    await a.fill("#register-password", "short");
    await a.click("#register-submit");
    await a.locator('#register-form .field-error[data-for="email"]:not(:empty)').waitFor();
    await shot(a, "register-validation", "inline validation messages from the API's fields");
    await a.fill("#register-email", email);
    await a.fill("#register-password", password);
    await a.click("#register-submit");
    await a.locator("#account").waitFor();
    await a.locator("#sessions li").first().waitFor();
    await shot(a, "registered", "signed in after registering, one session marked This device");
  });

  await step("log out, then log in again: one session, marked This device", async () => {
    await a.click("#logout");
    await a.locator("#login-form").waitFor();
    await shot(a, "logged-out", "login form after logging out");
    await a.fill("#login-email", email);
    await a.fill("#login-password", "wrong password");
    await a.click("#login-submit");
    await a.locator("#login-form .notice.error").waitFor();
    await a.fill("#login-password", password);
    await a.click("#login-submit");
    await a.locator("#sessions li").first().waitFor();
    if ((await sessionRows(a)) !== 1) throw new Error(`expected 1 session, saw ${await sessionRows(a)}`);
    const mark = await a.locator("#sessions li.current .badge").textContent();
    if (mark !== "This device") throw new Error(`no This device mark (${mark})`);
    await shot(a, "logged-in", "one session, This device; events show the failed attempt");
  });

  await step("a page on a listed origin reads the session with the cookie; an unlisted one cannot", async () => {
    const asked = async (origin) => {
      await a.goto(origin);
      await a.waitForFunction(() => document.title !== "asking");
      return a.title();
    };
    const listed = await asked(appOrigin);
    if (listed !== `me:${email}`) throw new Error(`listed origin saw ${listed}`);
    const other = await asked(otherOrigin);
    if (other !== "blocked") throw new Error(`unlisted origin saw ${other}`);
    await shot(a, "cors-unlisted", "a page on an unlisted origin could not read the session");
  });

  await step("after sign-in, return_to leads only to this origin or a listed one", async () => {
    await a.goto(base);
    await a.locator("#account").waitFor();
    await a.click("#logout");
    await a.locator("#login-form").waitFor();
    await a.goto(`${base}/login?return_to=${encodeURIComponent(`${otherOrigin}/back`)}`);
    await a.fill("#login-email", email);
    await a.fill("#login-password", password);
    await a.click("#login-submit");
    await a.locator("#account").waitFor();
    if (!a.url().startsWith(base)) throw new Error(`went to ${a.url()}`);
    await a.click("#logout");
    await a.locator("#login-form").waitFor();
    await a.goto(`${base}/login?return_to=${encodeURIComponent(`${appOrigin}/back?x=1`)}`);
    await a.fill("#login-email", email);
    await a.fill("#login-password", password);
    await a.click("#login-submit");
    await a.waitForURL(`${appOrigin}/back?x=1`);
    await shot(a, "returned-to-app", "signed in and sent back to the listed application");
    await a.goto(base);
    await a.locator("#sessions li").first().waitFor();
  });

  await step("a second profile signs in: the first sees two sessions", async () => {
    await b.goto(base);
    await b.fill("#login-email", email);
    await b.fill("#login-password", password);
    await b.click("#login-submit");
    await b.locator("#sessions li").nth(1).waitFor();
    await shot(b, "second-profile-phone-width", "second profile at 375 px wide: two sessions");
    const overflow = await b.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (overflow > 0) throw new Error(`page is ${overflow}px wider than a 375px screen`);
    await a.reload();
    await a.locator("#sessions li").nth(1).waitFor();
    if ((await sessionRows(a)) !== 2) throw new Error(`expected 2 sessions, saw ${await sessionRows(a)}`);
    await shot(a, "two-sessions", "first profile sees two sessions, one with a Sign out button");
  });

  await step("the first profile signs the second out", async () => {
    await a.locator("#sessions li:not(.current) button").click();
    await a.waitForFunction(() => document.querySelectorAll("#sessions li").length === 1);
    await shot(a, "signed-other-out", "back to one session after signing the other device out");
  });

  await step("the second profile's next action lands on the login form", async () => {
    await b.click("#revoke-others").catch(() => {});
    await b.locator("#login-form").waitFor({ state: "visible" });
    await b.reload();
    await b.locator("#login-form").waitFor({ state: "visible" });
    await shot(b, "second-signed-out", "second profile shows the login form");
  });

  await step("the link in the verification mail confirms the address", async () => {
    await a.goto(base);
    await a.locator("#verify-card").waitFor({ state: "visible" });
    await shot(a, "verify-notice", "the account asks to confirm the address, with a resend button");
    await a.click("#verify-resend");
    await a.locator("#verify-notice.ok").waitFor();
    const token = await mailedToken("verify", 1);
    await a.goto("about:blank"); // a link from a mail opens a fresh page
    await a.goto(`${base}/#verify=${token}`);
    await a.locator("#page-notice.ok").waitFor();
    if (!(await a.locator("#page-notice").textContent()).includes("confirmed")) throw new Error("no confirmation");
    if (a.url().includes("#")) throw new Error(`the token stayed in the address bar: ${a.url()}`);
    await a.locator("#account").waitFor();
    if (await a.locator("#verify-card").isVisible()) throw new Error("the notice is still shown");
    await shot(a, "verified", "address confirmed; the notice is gone");
  });

  await step("forgot password: the mailed link sets a new one and signs every device out", async () => {
    await a.click("#logout");
    await a.locator("#login-form").waitFor();
    await a.click("#forgot-link");
    await a.fill("#forgot-email", email);
    const before = mails.length;
    await a.click("#forgot-submit");
    await a.locator("#forgot-form .notice.ok").waitFor();
    await shot(a, "forgot-sent", "the same answer whether or not the address has an account");
    const token = await mailedToken("reset", before);
    await a.goto("about:blank");
    await a.goto(`${base}/#reset=${token}`);
    await a.locator("#reset-form").waitFor({ state: "visible" });
    if (a.url().includes("#")) throw new Error(`the token stayed in the address bar: ${a.url()}`);
    await a.fill("#reset-password", "a brand new password");
    await a.click("#reset-submit");
    await a.locator("#login-form .notice.ok").waitFor();
    await shot(a, "reset-done", "password set; sign in with it");
    await a.fill("#login-email", email);
    await a.fill("#login-password", password);
    await a.click("#login-submit");
    await a.locator("#login-form .notice.error").waitFor();
    await a.fill("#login-password", "a brand new password");
    await a.click("#login-submit");
    await a.locator("#sessions li").first().waitFor();
    await shot(a, "signed-in-after-reset", "signed in with the new password");
  });

  await step("two-factor sign-in: QR code, recovery codes, the code at sign-in, turning it off", async () => {
    const newPassword = "a brand new password";
    await a.fill("#mfa-password", newPassword);
    await a.click("#mfa-begin");
    await a.locator("#mfa-confirm-form").waitFor({ state: "visible" });
    const drawn = await a.locator("#mfa-qr").evaluate((img) => img.complete && img.naturalWidth);
    if (!(drawn >= 200)) throw new Error(`the QR code did not render (${drawn})`);
    const secret = (await a.locator("#mfa-secret").textContent()).trim();
    await shot(a, "mfa-enroll", "enrollment: the QR code and the key, waiting for the first code");
    await a.fill("#mfa-confirm-code", "000000");
    await a.click("#mfa-confirm");
    await a.locator("#mfa-confirm-form .notice.error").waitFor();
    await steadyStep();
    await a.fill("#mfa-confirm-code", totp(secret));
    await a.click("#mfa-confirm");
    await a.locator("#mfa-codes").waitFor({ state: "visible" });
    const codes = await a.locator("#mfa-code-list li").allTextContents();
    if (codes.length !== 10) throw new Error(`expected 10 recovery codes, saw ${codes.length}`);
    const download = a.waitForEvent("download");
    await a.click("#mfa-download");
    if ((await download).suggestedFilename() !== "latchkey-recovery-codes.txt") throw new Error("no download");
    await shot(a, "mfa-recovery-codes", "two-factor on: the ten recovery codes, shown once");
    await a.click("#mfa-done");
    if ((await a.locator("#mfa-state").textContent()) !== "On") throw new Error("state is not On");
    if (await a.locator("#mfa-code-list li").count()) throw new Error("codes still on the page");

    await a.click("#logout");
    await a.locator("#login-form").waitFor();
    await a.fill("#login-email", email);
    await a.fill("#login-password", newPassword);
    await a.click("#login-submit");
    await a.locator("#login-code").waitFor({ state: "visible" });
    await shot(a, "mfa-sign-in", "right password: the page asks for the code");
    await steadyStep();
    await a.fill("#login-code", totp(secret, 1));
    await a.click("#login-submit");
    await a.locator("#sessions li").first().waitFor();
    if (await a.locator("#login-code").isVisible()) throw new Error("code field still shown");

    // With a second factor, changing the password asks for a code too.
    await a.locator("#password-code").waitFor({ state: "visible" });
    await a.fill("#current-password", newPassword);
    await a.fill("#new-password", newPassword);
    await a.click("#password-form button[type=submit]");
    await a.locator("#password-form .notice.error").waitFor();
    await a.fill("#current-password", newPassword);
    await a.fill("#password-code", codes[1]);
    await a.fill("#new-password", newPassword);
    await a.click("#password-form button[type=submit]");
    await a.locator("#password-form .notice.ok").waitFor();

    await a.fill("#mfa-disable-code", codes[0]);
    await a.click("#mfa-disable");
    await a.locator("#mfa-begin-form .notice.ok").waitFor();
    if ((await a.locator("#mfa-state").textContent()) !== "Off") throw new Error("state is not Off");
    const kinds = await a.locator("#events li .event-type").allTextContents();
    for (const kind of ["Two-factor sign-in turned off", "Recovery code used", "Two-factor sign-in turned on"]) {
      if (!kinds.includes(kind)) throw new Error(`no "${kind}" event: ${kinds}`);
    }
    if (await a.locator("#password-code").isVisible()) throw new Error("the code field stayed");
    await shot(a, "mfa-off", "turned off with a recovery code; the events list it");
  });

  await step("OpenID provider: link it, sign in with it, unlink it", async () => {
    // Signed in with the password: link the provider from the account page.
    await a.locator('#link-buttons a[data-provider="test"]').click();
    await a.locator('input[name="login"]').waitFor();
    await shot(a, "oidc-provider-form", "the provider's own sign-in form");
    await a.fill('input[name="login"]', "e2e-person");
    await a.fill('input[name="password"]', "anything");
    await a.click('button[type="submit"]');
    await a.locator("#identities li").first().waitFor();
    const linked = await a.locator("#identities li").allTextContents();
    if (!linked[0].includes("Test Provider")) throw new Error(`identities: ${linked}`);
    await shot(a, "oidc-linked", "the provider is linked; its link button is gone");
    // Signed out, the login form offers the provider; it signs in to the same account.
    await a.click("#logout");
    await a.locator('#oidc-buttons a[data-provider="test"]').waitFor();
    await shot(a, "oidc-sign-in-button", "the login form with Sign in with Test Provider");
    await a.locator('#oidc-buttons a[data-provider="test"]').click();
    const form = a.locator('input[name="login"]');
    const account = a.locator("#who-email");
    await Promise.race([form.waitFor(), account.waitFor()]);
    if (await form.isVisible()) {
      await a.fill('input[name="login"]', "e2e-person");
      await a.fill('input[name="password"]', "anything");
      await a.click('button[type="submit"]');
    }
    await account.waitFor();
    if ((await account.textContent()) !== email) throw new Error("signed in to another account");
    const kinds = await a.locator("#events li .event-type").allTextContents();
    if (!kinds.includes("Sign-in provider linked")) throw new Error(`no link event: ${kinds}`);
    await a.locator("#identities li button").click();
    await a.locator("#identities-notice.ok").waitFor();
    // The list is drawn again once the account has reloaded.
    await a.locator("#identities li").first().waitFor({ state: "detached", timeout: 10_000 });
    if (await a.locator("#identities li").count()) throw new Error("still linked");
    // An error from a sign-in is explained on the page.
    await a.goto(`${base}/?oidc_error=link_required`);
    const told = await a.locator("#page-notice").textContent();
    if (!told.includes("already exists")) throw new Error(`notice: ${told}`);
    await shot(a, "oidc-error", "a provider sign-in's error explained on the page");
  });
} catch (error) {
  failed = true;
} finally {
  for (const p of [first, second]) {
    if (p) {
      await p.context.close().catch(() => {});
      rmSync(p.dir, { recursive: true, force: true });
    }
  }
  server.kill("SIGTERM");
  provider.kill("SIGTERM");
  for (const site of sites) site.close();
  smtp.close();
  rmSync(dataDir, { recursive: true, force: true });
}

const passed = results.filter(([, ok]) => ok).length;
const failures = results.length - passed + (failed && results.every(([, ok]) => ok) ? 1 : 0);
console.log(`e2e: ${passed} passed, ${failures} failed`);
process.exit(failures === 0 ? 0 : 1);
