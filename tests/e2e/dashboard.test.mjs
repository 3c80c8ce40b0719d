// The Citrus dashboard end to end: Debian's Chromium (headless, driven by playwright-core) against
// the real citrus-backend, citrus-hub and citrus-agent on loopback ports, with a seeded SQLite file.
//
//   CITRUS_BUILD_DIR   the build folder holding apps/{backend,hub,agent}/citrus-* (default build/ci);
//                      screenshots go to $CITRUS_BUILD_DIR/e2e-screenshots
//   CITRUS_CHROMIUM    the browser (default /usr/bin/chromium)
//
// The tests run in order and share the platform: each scenario starts where the previous one left.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { createRequire } from 'node:module';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { ADMIN, Platform, USERS, httpGet } from './platform.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const axeSource = fs.readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const root = path.resolve(here, '../..');
const buildDir = path.resolve(process.env.CITRUS_BUILD_DIR || path.join(root, 'build/ci'));
const shots = path.join(buildDir, 'e2e-screenshots');
const chromiumPath = process.env.CITRUS_CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const SHORT_LIFETIME_S = 8;
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

const ALICE_SITE = 'alice-portfolio';
const ALICE_URL = 'https://portfolio.alice.test';
const ALICE_MARKUP_SITE = 'Recipes <b>&</b> notes';
const ALICE_RENAMED_SITE = 'Recipes and notes';
const BOB_SITE = 'bob-shop';

const EXPIRED_TEXT = 'Your session has expired, please log in again.';
const REFUSAL_TEXT = 'You do not have access to this site.';
const BANNER_TEXT = 'Connection lost — reconnecting…';

let platform;
let main;
let short;
let browser;
let anyFailed = false;
const opened = [];  // every page: {name, page, context, w, origin}
let alice;
let bob;
let aliceSiteId = 0;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A test that records its failure, so that the processes' logs are printed and kept. */
function scenario(name, fn, timeout = 90000) {
  test(name, { timeout }, async () => {
    try {
      await fn();
    } catch (err) {
      anyFailed = true;
      // What each page showed when it failed, next to the other screenshots.
      for (const o of opened) {
        await screenshot(o.page, `failed-${name.slice(0, 40).replace(/[^a-z0-9]+/gi, '-')}-${o.name}`).catch(() => {});
      }
      throw err;
    }
  });
}

async function screenshot(page, name, options = {}) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), ...options });
}

async function visible(locator, timeout = 10000) {
  await locator.waitFor({ state: 'visible', timeout });
}

async function hidden(locator, timeout = 10000) {
  await locator.waitFor({ state: 'hidden', timeout });
}

/**
 * axe-core's WCAG 2.1 A/AA checks (contrast included) on what the page shows now: one line per
 * problem. Injected through the DevTools protocol, which the page's CSP does not govern.
 */
async function accessibilityProblems(page) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(axeSource);
  return page.evaluate(async () => {
    const result = await window.axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] },
      resultTypes: ['violations'],
    });
    return result.violations.map((v) => `${v.impact}: ${v.id} — ${v.help}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
  });
}

async function assertAccessible(page, what) {
  assert.deepEqual(await accessibilityProblems(page), [], `accessibility problems on ${what}`);
}

function siteRow(page, name) {
  return page.locator('tr.site-row', { has: page.locator('a.site-name', { hasText: name }) });
}

/** A fresh browser context (its own storage, cookies and sockets) with the dashboard open. */
async function openDashboard(name, backend, viewport = DESKTOP) {
  const context = await browser.newContext({
    viewport,
    baseURL: backend.origin,
    locale: 'en-US',
    timezoneId: 'UTC',
    serviceWorkers: 'block',
  });
  // Recorded before any of the page's scripts: every Content-Security-Policy violation.
  await context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  const page = await context.newPage();
  const w = { requests: [], responses: [], pageErrors: [], cspConsole: [], sockets: [], sent: [], received: [] };
  page.on('request', (r) => w.requests.push(r.url()));
  page.on('response', (r) => w.responses.push({ url: r.url(), status: r.status() }));
  page.on('pageerror', (e) => w.pageErrors.push(e.message));
  page.on('console', (m) => {
    if (/content security policy/i.test(m.text())) w.cspConsole.push(m.text());
  });
  page.on('websocket', (ws) => {
    const index = w.sockets.length;
    w.sockets.push(ws.url());
    ws.on('framesent', (f) => w.sent.push({ socket: index, text: String(f.payload) }));
    ws.on('framereceived', (f) => w.received.push({ socket: index, text: String(f.payload) }));
  });
  await page.goto('/');
  await visible(page.getByRole('heading', { name: 'Log in to Citrus' }));
  const entry = { name, page, context, w, origin: backend.origin };
  opened.push(entry);
  return entry;
}

async function logIn(page, user, password = USERS[user]) {
  const form = page.locator('#login-form');  // the admin console has username and password fields too
  await form.getByLabel('Username').fill(user);
  await form.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
}

async function logInAndWait(page, user, password = USERS[user]) {
  await logIn(page, user, password);
  await visible(page.getByRole('heading', { name: 'Your sites', level: 1 }));
  await visible(page.getByText('Live updates on'));
  await page.waitForFunction(() => document.getElementById('sites-loading').hidden);
}

/** Watches a page's document for any of `needles`, in text or attributes, from now on. */
async function watchForLeaks(page, needles) {
  await page.evaluate((words) => {
    window.__leaks = [];
    const check = () => {
      const html = document.documentElement.outerHTML + document.title;
      for (const word of words) if (html.includes(word) && !window.__leaks.includes(word)) window.__leaks.push(word);
    };
    new MutationObserver(check).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
    check();
  }, needles);
}

/** The WebSocket handshake's HTTP status for an Origin header (101: accepted). */
function wsHandshakeStatus(backend, origin) {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1',
      port: backend.port,
      path: '/ws',
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': crypto.randomBytes(16).toString('base64'),
        Origin: origin,
      },
      timeout: 5000,
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve(res.statusCode);
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('timeout', () => req.destroy(new Error('handshake timed out')));
    req.on('error', reject);
    req.end();
  });
}

function parsedFrames(list, socket) {
  const out = [];
  for (const f of list) {
    if (socket !== undefined && f.socket !== socket) continue;
    try {
      out.push(JSON.parse(f.text));
    } catch {
      out.push({ unparsable: f.text });
    }
  }
  return out;
}

// ------------------------------------------------------------------------------------ the platform

before(async () => {
  platform = new Platform({ buildDir, webRoot: path.join(root, 'apps/web'), stepDelayMs: 400 });
  fs.rmSync(shots, { recursive: true, force: true });
  fs.mkdirSync(shots, { recursive: true });
  await platform.seed();
  main = await platform.startBackend({ name: 'backend', tokenLifetimeS: 900 });
  await platform.startHub(main.origin);
  platform.startAgent();
  await platform.waitAgentOnline(main.origin);
  // A second backend on the same database whose tokens live 8 s (it never contacts the hub).
  short = await platform.startBackend({ name: 'backend-short', tokenLifetimeS: SHORT_LIFETIME_S, hub: false });
  browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: CHROMIUM_FLAGS, timeout: 60000 });
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (!platform) return;
  if (anyFailed) {
    process.stderr.write(`\n${platform.logs()}\n\nThe data folder is kept: ${platform.dir}\n`);
  }
  await platform.stop({ keep: anyFailed });
});

process.on('exit', () => {
  if (platform) platform.killAll();
});

// ------------------------------------------------------------------------------------ scenarios

scenario('the backend serves the dashboard with a strict CSP, security headers and an Origin check', async () => {
  const page = await httpGet(`${main.origin}/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type'), /^text\/html/);
  const csp = page.headers.get('content-security-policy') || '';
  for (const directive of ["default-src 'self'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"])
    assert.ok(csp.split(';').map((d) => d.trim()).includes(directive), `CSP lacks ${directive}: ${csp}`);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*|https?:/, `CSP allows too much: ${csp}`);
  assert.equal(page.headers.get('x-content-type-options'), 'nosniff');
  assert.equal(page.headers.get('x-frame-options'), 'DENY');
  assert.equal(page.headers.get('referrer-policy'), 'no-referrer');

  // The page itself needs nothing the CSP forbids: no inline script, no style or event attribute,
  // nothing from another origin.
  assert.doesNotMatch(page.body, /<script(?![^>]*\ssrc=)[^>]*>/i);
  assert.doesNotMatch(page.body, /\sstyle\s*=/i);
  assert.doesNotMatch(page.body, /\son[a-z]+\s*=/i);
  assert.doesNotMatch(page.body, /(src|href)\s*=\s*"(https?:)?\/\//i);
  for (const [file, type] of [['app.js', /^text\/javascript/], ['api.js', /^text\/javascript/], ['live.js', /^text\/javascript/], ['admin.js', /^text\/javascript/], ['app.css', /^text\/css/]]) {
    const r = await httpGet(`${main.origin}/${file}`);
    assert.equal(r.status, 200, file);
    assert.match(r.headers.get('content-type'), type, file);
    assert.doesNotMatch(r.body, /localStorage|sessionStorage|document\.cookie|innerHTML|eval\(/, `${file} uses an API the dashboard avoids`);
  }

  assert.equal(await wsHandshakeStatus(main, 'http://evil.example'), 403, 'a foreign Origin is refused');
  assert.equal(await wsHandshakeStatus(main, `http://localhost:${main.port}`), 403, 'another origin of the same host is refused');
  assert.equal(await wsHandshakeStatus(main, main.origin), 101, "the dashboard's own origin is accepted");
});

scenario('alice and bob log in from two browser contexts; the token stays in memory', async () => {
  alice = await openDashboard('alice', main);
  bob = await openDashboard('bob', main);
  await screenshot(alice.page, '01-login');
  await assertAccessible(alice.page, 'the login form');

  // A wrong password is explained, and the form stays.
  await logIn(bob.page, 'bob', 'not-the-password');
  await visible(bob.page.getByRole('alert').filter({ hasText: 'The username or password is not right. Check them and try again.' }));
  await logInAndWait(bob.page, 'bob');
  await logInAndWait(alice.page, 'alice');
  await visible(alice.page.getByText('Signed in as alice'));
  await visible(bob.page.getByText('Signed in as bob'));

  for (const { page, w, origin } of [alice, bob]) {
    // One socket, same origin, path /ws, no token in its URL; the token goes in the first message.
    assert.deepEqual(w.sockets, [`${origin.replace('http:', 'ws:')}/ws`]);
    const first = parsedFrames(w.sent, 0)[0];
    assert.equal(first.type, 'auth');
    assert.equal(first.v, 1);
    assert.ok(first.token && first.token.length > 20);
    const stored = await page.evaluate(() => ({
      local: localStorage.length,
      session: sessionStorage.length,
      cookie: document.cookie,
      url: location.href,
      html: document.documentElement.outerHTML,
    }));
    assert.equal(stored.local, 0, 'nothing in localStorage');
    assert.equal(stored.session, 0, 'nothing in sessionStorage');
    assert.equal(stored.cookie, '');
    assert.equal((await page.context().cookies()).length, 0);
    assert.ok(!stored.url.includes(first.token), 'the token is not in the URL');
    assert.ok(!stored.html.includes(first.token), 'the token is not in the document');
    for (const url of w.requests) assert.ok(!url.includes(first.token), `the token is not in a request URL: ${url}`);
  }

  // From now on, each page notes it if anything of the other user ever shows up.
  await watchForLeaks(bob.page, [ALICE_SITE, ALICE_URL, 'Recipes']);
  await watchForLeaks(alice.page, [BOB_SITE]);
  await visible(bob.page.getByText('You have no sites yet.'));
});

scenario('alice creates sites; the form says what is wrong; names are shown as plain text', async () => {
  const { page } = alice;
  await page.getByRole('button', { name: 'New site' }).click();
  await visible(page.getByRole('heading', { name: 'New site' }));
  await page.getByLabel('Name', { exact: true }).fill(ALICE_SITE);
  await page.getByLabel('URL', { exact: true }).fill('portfolio.alice.test');
  await page.getByRole('button', { name: 'Create site' }).click();
  await visible(page.getByText('The address must start with https:// or http://.'));
  assert.equal(await page.getByLabel('URL', { exact: true }).getAttribute('aria-invalid'), 'true');
  await screenshot(page, '02-new-site-form');
  await assertAccessible(page, 'the site form with an error');

  await page.getByLabel('URL', { exact: true }).fill(ALICE_URL);
  await page.getByRole('button', { name: 'Create site' }).click();
  const row = siteRow(page, ALICE_SITE);
  await visible(row);
  // The hosting server sets it up; its answer arrives over the WebSocket.
  await visible(row.getByText('Not deployed yet'), 15000);
  await visible(row.getByRole('link', { name: ALICE_URL }));
  aliceSiteId = Number(await row.getAttribute('data-site-id'));
  assert.ok(aliceSiteId > 0);

  // This time the POST's answer reaches the page after the hosting server's pushed answer (as happens
  // on a busy machine): the older copy of the site ("Setting up…") must not overwrite the newer one.
  const receivedBefore = alice.w.received.length;
  let release;
  const released = new Promise((resolve) => { release = resolve; });
  await page.route('**/api/sites', async (route) => {
    if (route.request().method() !== 'POST') return route.fallback();
    const response = await route.fetch();
    const deadline = Date.now() + 10000;
    while (Date.now() < deadline && !alice.w.received.slice(receivedBefore).some((f) => f.text.includes('"site.create"'))) {
      await sleep(50);
    }
    await route.fulfill({ response });
    release();
  });
  await page.getByRole('button', { name: 'New site' }).click();
  await page.getByLabel('Name', { exact: true }).fill(ALICE_MARKUP_SITE);
  await page.getByLabel('URL', { exact: true }).fill('https://recipes.alice.test/');
  await page.getByRole('button', { name: 'Create site' }).click();
  const markupRow = siteRow(page, ALICE_MARKUP_SITE);
  await released;  // unrouting a request still held would let the browser send it a second time
  await page.unroute('**/api/sites');
  await visible(markupRow);
  assert.ok(alice.w.received.slice(receivedBefore).some((f) => f.text.includes('"site.create"')),
    'the pushed answer arrived before the POST response was released');
  await visible(markupRow.getByText('Not deployed yet'), 15000);
  assert.equal(await markupRow.locator('b').count(), 0, 'a site name is never parsed as HTML');
  assert.equal(await markupRow.getByRole('rowheader').innerText(), ALICE_MARKUP_SITE);
  await screenshot(page, '03-sites');
});

scenario('the site form checks name and URL as the server does, next to each field, and sends nothing until they are right', async () => {
  const { page } = alice;
  const posted = [];
  const onRequest = (r) => {
    if (r.method() === 'POST' && new URL(r.url()).pathname === '/api/sites') posted.push(r.postData());
  };
  page.on('request', onRequest);
  try {
    await page.getByRole('button', { name: 'New site' }).click();
    await visible(page.getByRole('heading', { name: 'New site' }));
    const name = page.getByLabel('Name', { exact: true });
    const url = page.getByLabel('URL', { exact: true });
    const submit = page.getByRole('button', { name: 'Create site' });
    // The addresses of issue #14, and others the server refuses: each is named next to the URL field.
    for (const bad of ['https://not a url', 'https://', 'http://a b', 'https://bank.test@evil.test/', 'https://x.test:70000/', 'https://x..test/']) {
      await name.fill('checked-site');
      await url.fill(bad);
      await submit.click();
      await visible(page.locator('#site-url-error'));
      assert.equal(await url.getAttribute('aria-invalid'), 'true', bad);
      assert.ok((await url.getAttribute('aria-describedby')).split(' ').includes('site-url-error'));
      assert.match(await page.locator('#site-url-error').innerText(), /address/, bad);
      assert.equal(await name.getAttribute('aria-invalid'), null, `the name was right (${bad})`);
      assert.ok(await url.evaluate((el) => el === document.activeElement), 'the wrong field has the focus');
    }
    await name.fill('é'.repeat(51));  // 51 characters (the field takes 100), 102 bytes: the server counts bytes
    await url.fill('https://fine.test/');
    await submit.click();
    await visible(page.locator('#site-name-error'));
    assert.equal(await name.getAttribute('aria-invalid'), 'true');
    assert.ok((await name.getAttribute('aria-describedby')).split(' ').includes('site-name-error'));
    assert.equal(await page.locator('#site-name-error').innerText(),
      'The name is too long: use at most 100 characters (accented and other non-English letters count as two or more).');
    assert.equal(await url.getAttribute('aria-invalid'), null);
    await screenshot(page, '03b-site-form-field-errors');
    await assertAccessible(page, 'the site form with a field error');
    assert.deepEqual(posted, [], 'nothing is sent while a field is wrong');

    // The page's check and the server's agree on every address of the shared list (the unit test
    // test_site_service.cpp runs the server's check over the same list).
    const cases = JSON.parse(fs.readFileSync(path.join(root, 'tests/site_urls.json'), 'utf8'));
    const verdicts = await page.evaluate(async ({ valid, invalid }) => {
      const fields = await import('/site_fields.js');
      const ok = (u) => fields.siteFieldProblems('n', u).url === undefined;
      return { valid: valid.filter((u) => !ok(u)), invalid: invalid.filter((u) => ok(u)) };
    }, cases);
    assert.deepEqual(verdicts, { valid: [], invalid: [] }, 'the page and the server disagree on these addresses');

    // An error the server names a field for is shown next to that field too.
    await page.route('**/api/sites', (route) => route.fulfill({
      status: 400,
      contentType: 'application/json',
      body: JSON.stringify({ success: false, message: 'Invalid name: 1 to 100 characters, no control characters', field: 'name' }),
    }));
    await name.fill('server-refused');
    await url.fill('https://fine.test/');
    await submit.click();
    await visible(page.locator('#site-name-error'));
    assert.equal(await name.getAttribute('aria-invalid'), 'true');
    assert.match(await page.locator('#site-name-error').innerText(), /did not accept this name/);
    await visible(page.getByText('The site was not created.', { exact: false }));
    await page.unroute('**/api/sites');
    await page.locator('#site-form-cancel').click();
    await hidden(page.locator('#site-form'));
    assert.equal(await siteRow(page, 'server-refused').count(), 0);
    assert.equal(posted.length, 1, 'only the request the page let through was sent');
  } finally {
    page.off('request', onRequest);
  }
});

scenario('alice deploys a site and sees the progress live until it is deployed', async () => {
  const { page, w } = alice;
  const row = siteRow(page, ALICE_SITE);
  const receivedBefore = w.received.length;
  await page.getByRole('button', { name: `Deploy ${ALICE_SITE}` }).click();

  const bar = page.getByRole('progressbar', { name: new RegExp(`Deploying “${ALICE_SITE}” — \\d+%`) });
  await visible(bar);
  await page.waitForFunction(() => {
    const p = document.querySelector('tr.progress-row:not([hidden]) progress');
    return p && p.value > 0 && p.value < 100;
  });
  await visible(row.locator('td[data-label="Status"]').getByText('Deploying…'));
  await screenshot(page, '04-deploy-in-progress');
  await assertAccessible(page, 'the sites list during a deploy');

  await visible(page.locator('#sites-table').getByText(`Deploy of “${ALICE_SITE}” finished: deployed`), 20000);
  await visible(row.getByText('Deployed', { exact: true }));
  assert.equal((await row.locator('td[data-label="Deployer"]').innerText()).trim(), 'agent-1');
  const lastDeploy = (await row.locator('td[data-label="Last deploy"]').innerText()).trim();
  assert.notEqual(lastDeploy, 'Never');
  assert.match(lastDeploy, /\d{4}/);
  const log = await page.locator('tr.progress-row:not([hidden]) ol.deploy-steps').innerText();
  for (const step of ['preparing release', 'writing files', 'switching current release', 'Deployed'])
    assert.ok(log.includes(step), `the step log shows "${step}": ${log}`);
  assert.equal(await page.locator('tr.progress-row:not([hidden]) progress').evaluate((p) => p.value), 100);
  await screenshot(page, '05-deployed');

  // It came over the WebSocket, and the agent really switched the site to the new release.
  const frames = parsedFrames(w.received.slice(receivedBefore));
  assert.ok(frames.filter((f) => f.type === 'progress' && f.site === aliceSiteId && f.op === 'site.deploy').length >= 2);
  assert.ok(frames.some((f) => f.type === 'result' && f.site === aliceSiteId && f.status === 'ok' && f.payload?.deploy_status === 'deployed'));
  assert.ok(fs.existsSync(path.join(platform.sitesRoot, `site-${aliceSiteId}`, 'current')));
});

scenario("bob's page never shows alice's sites or their updates", async () => {
  const { page, w } = bob;
  await visible(page.getByText('You have no sites yet.'));
  await page.getByRole('button', { name: 'New site' }).click();
  await page.getByLabel('Name', { exact: true }).fill(BOB_SITE);
  await page.getByLabel('URL', { exact: true }).fill('https://shop.bob.test');
  await page.getByRole('button', { name: 'Create site' }).click();
  await visible(siteRow(page, BOB_SITE).getByText('Not deployed yet'), 15000);
  assert.equal(await page.locator('tr.site-row').count(), 1);
  await screenshot(page, '06-bob-sites');

  assert.deepEqual(await page.evaluate(() => window.__leaks), []);
  for (const frame of parsedFrames(w.received)) {
    assert.notEqual(frame.site, aliceSiteId, `bob received an update of alice's site: ${JSON.stringify(frame)}`);
    assert.ok(!JSON.stringify(frame).includes(ALICE_SITE));
  }
  assert.deepEqual(await alice.page.evaluate(() => window.__leaks), []);
  assert.equal(await siteRow(alice.page, BOB_SITE).count(), 0);
});

scenario("bob opening alice's site by its id is refused", async () => {
  const { page } = bob;
  const answer = page.waitForResponse((r) => r.url().endsWith(`/api/sites/${aliceSiteId}`));
  await page.evaluate((id) => {
    window.location.hash = `#/sites/${id}`;
  }, aliceSiteId);
  assert.equal((await answer).status(), 403);
  await visible(page.getByRole('alert').filter({ hasText: REFUSAL_TEXT }));
  await visible(page.getByRole('heading', { name: 'Site not available', level: 1 }));
  assert.equal(await page.getByRole('button', { name: 'Deploy' }).count(), 0);
  assert.deepEqual(await page.evaluate(() => window.__leaks), []);
  await screenshot(page, '07-refusal');
  await assertAccessible(page, 'the refusal');

  // The same address in alice's page opens her site.
  await alice.page.evaluate((id) => {
    window.location.hash = `#/sites/${id}`;
  }, aliceSiteId);
  await visible(alice.page.getByRole('heading', { name: ALICE_SITE, level: 1 }));
  await visible(alice.page.locator('#detail-status').getByText('Deployed', { exact: true }));
  await alice.page.getByRole('link', { name: '← Back to your sites' }).click();
  await visible(alice.page.getByRole('heading', { name: 'Your sites', level: 1 }));
  await page.getByRole('link', { name: '← Back to your sites' }).click();
  await visible(siteRow(page, BOB_SITE));
});

scenario('alice edits a site and deletes another', async () => {
  const { page } = alice;
  await page.getByRole('button', { name: `Edit ${ALICE_MARKUP_SITE}` }).click();
  await visible(page.getByRole('heading', { name: `Edit “${ALICE_MARKUP_SITE}”` }));
  await page.getByLabel('Name', { exact: true }).fill('');
  await page.getByRole('button', { name: 'Save changes' }).click();
  await visible(page.getByText('Enter a name for the site.'));
  await page.getByLabel('Name', { exact: true }).fill(ALICE_RENAMED_SITE);
  await page.getByRole('button', { name: 'Save changes' }).click();
  await visible(siteRow(page, ALICE_RENAMED_SITE));
  assert.equal(await siteRow(page, ALICE_MARKUP_SITE).count(), 0);

  await page.getByRole('button', { name: `Delete ${ALICE_RENAMED_SITE}` }).click();
  const dialog = page.getByRole('dialog', { name: 'Delete this site?' });
  await visible(dialog);
  await visible(dialog.getByText(`“${ALICE_RENAMED_SITE}” and its files on the hosting server will be removed.`));
  await dialog.getByRole('button', { name: 'Delete site' }).click();
  await hidden(siteRow(page, ALICE_RENAMED_SITE));
  assert.equal(await page.locator('tr.site-row').count(), 1);
  await visible(siteRow(page, ALICE_SITE));
});

scenario('the dashboard fits a phone screen', async () => {
  const { page } = alice;
  await page.setViewportSize(PHONE);
  await visible(page.getByRole('button', { name: 'New site' }));
  const widths = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth }));
  assert.ok(widths.scroll <= widths.client, `no sideways scrolling at ${PHONE.width} px: ${JSON.stringify(widths)}`);
  for (const name of [`Deploy ${ALICE_SITE}`, `Edit ${ALICE_SITE}`, `Delete ${ALICE_SITE}`, 'Log out']) {
    const box = await page.getByRole('button', { name }).boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= PHONE.width, `${name} fits the screen`);
    assert.ok(box.height >= 40, `${name} is big enough to touch`);
  }
  // Each value says what it is, since the table's header row is not shown.
  const label = await siteRow(page, ALICE_SITE).locator('td[data-label="Status"]').evaluate((td) => getComputedStyle(td, '::before').content);
  assert.equal(label, '"Status"');
  await screenshot(page, '08-phone', { fullPage: true });
  await assertAccessible(page, 'the sites list at phone width');
  await page.setViewportSize(DESKTOP);
});

scenario('a lost connection shows a banner, and the page reconnects by itself', async () => {
  const { page, w } = alice;
  const socketsBefore = w.sockets.length;
  const token = parsedFrames(w.sent, 0)[0].token;
  assert.equal(await platform.stopBackend('backend'), 0, 'the backend stops cleanly on SIGTERM');
  await visible(page.getByRole('alert').filter({ hasText: BANNER_TEXT }));
  await visible(page.getByText('Reconnecting…', { exact: true }));
  await visible(bob.page.getByRole('alert').filter({ hasText: BANNER_TEXT }));
  await screenshot(page, '09-reconnecting');
  await assertAccessible(page, 'the connection banner');

  await sleep(500);
  await platform.restartBackend('backend');
  await hidden(page.locator('#banner'), 20000);
  await visible(page.getByText('Live updates on'));
  await hidden(bob.page.locator('#banner'), 20000);
  assert.ok(w.sockets.length > socketsBefore, 'a new socket was opened');
  const reconnectAuth = parsedFrames(w.sent, w.sockets.length - 1)[0];
  assert.equal(reconnectAuth.type, 'auth');
  assert.equal(reconnectAuth.token, token, 'the same in-memory token authenticates the new socket');
  await visible(siteRow(page, ALICE_SITE).getByText('Deployed', { exact: true }));

  // Live updates flow again once the restarted backend is back at the hub.
  await platform.waitAgentOnline(main.origin);
  const newSocket = w.sockets.length - 1;
  await page.getByRole('button', { name: `Deploy ${ALICE_SITE}` }).click();
  await visible(page.locator('#sites-table').getByText(`Deploying “${ALICE_SITE}” —`));
  await visible(page.locator('#sites-table').getByText(`Deploy of “${ALICE_SITE}” finished: deployed`), 20000);
  assert.ok(parsedFrames(w.received, newSocket).some((f) => f.type === 'progress' && f.site === aliceSiteId));
  assert.deepEqual(await bob.page.evaluate(() => window.__leaks), []);
});

scenario('a deploy that fails midway is shown as failed, in words', async () => {
  const { page } = alice;
  const row = siteRow(page, ALICE_SITE);
  await page.getByRole('button', { name: `Deploy ${ALICE_SITE}` }).click();
  await page.waitForFunction(() => {
    const p = document.querySelector('tr.progress-row:not([hidden]) progress');
    return p && p.value > 0 && p.value < 100;
  });
  // The hosting server goes away in the middle of it.
  platform.agent.killNow();
  await platform.agent.exited;
  await visible(page.locator('#sites-table').getByText(`Deploy of “${ALICE_SITE}” failed`), 20000);
  await visible(page.locator('#sites-table').getByText('Failed: The hosting server disconnected before it finished.'));
  await visible(row.locator('td[data-label="Status"]').getByText('Failed', { exact: true }));
  await screenshot(page, '10-deploy-failed');
  await assertAccessible(page, 'a failed deploy');

  // Back online, the next deploy goes through.
  platform.startAgent();
  await platform.waitAgentOnline(main.origin);
  await page.getByRole('button', { name: `Deploy ${ALICE_SITE}` }).click();
  await visible(page.locator('#sites-table').getByText(`Deploy of “${ALICE_SITE}” finished: deployed`), 20000);
  await visible(row.getByText('Deployed', { exact: true }));
});

scenario('the token is refreshed over the same WebSocket before it expires', async () => {
  const carol = await openDashboard('alice-short-session', short);
  const { page, w } = carol;
  await logInAndWait(page, 'alice');
  await visible(siteRow(page, ALICE_SITE));
  const firstToken = parsedFrames(w.sent, 0)[0].token;

  await sleep(SHORT_LIFETIME_S * 1500);  // one and a half lifetimes of the first token
  assert.equal(await page.locator('#login-view').isHidden(), true, 'still logged in');
  await visible(page.getByText('Live updates on'));
  assert.equal(w.sockets.length, 1, 'the same socket all along');
  const reauths = parsedFrames(w.sent, 0).filter((f) => f.type === 'reauth');
  assert.ok(reauths.length >= 2, `the token was handed over on the socket (${reauths.length} reauth)`);
  assert.ok(reauths.every((f) => f.token && f.token !== firstToken));
  const refreshes = w.responses.filter((r) => r.url.endsWith('/api/token/refresh'));
  assert.ok(refreshes.length >= 2 && refreshes.every((r) => r.status === 200));
  assert.ok(parsedFrames(w.received, 0).filter((f) => f.type === 'auth_ok').length >= 3);
  // The page still works with the refreshed token.
  await page.evaluate((id) => {
    window.location.hash = `#/sites/${id}`;
  }, aliceSiteId);
  await visible(page.getByRole('heading', { name: ALICE_SITE, level: 1 }));
  // This backend has no hosting service behind it: the refusal comes in words.
  await page.getByRole('button', { name: 'Deploy', exact: true }).click();
  await visible(page.getByRole('alert').filter({
    hasText: `“${ALICE_SITE}” was not deployed. The hosting service cannot be reached right now, so the deploy did not start. Try again in a minute.`,
  }));
  await screenshot(page, '11-site-detail');
  await assertAccessible(page, 'one site with an error');
  await page.getByRole('link', { name: '← Back to your sites' }).click();
  await visible(siteRow(page, ALICE_SITE));
});

scenario('a token that expires mid-session leads back to the login form', async () => {
  const { page } = opened.find((o) => o.name === 'alice-short-session');
  // The refresh cannot reach the server any more (as on a broken network): the token runs out.
  await page.route('**/api/token/refresh', (route) => route.abort('connectionrefused'));
  await visible(page.getByText(EXPIRED_TEXT), (SHORT_LIFETIME_S + 6) * 1000);
  await visible(page.getByRole('heading', { name: 'Log in to Citrus' }));
  await visible(page.locator('#login-form').getByLabel('Username'));
  assert.equal(await page.locator('#sites-view').isHidden(), true);
  assert.equal(await page.locator('tr.site-row').count(), 0, "nothing of the user's stays on the page");
  assert.equal(await page.getByText('Signed in as').isHidden(), true);
  assert.equal(await page.locator('#user-name').textContent(), '');
  assert.equal(await page.evaluate(() => document.documentElement.outerHTML.includes('alice-portfolio')), false);
  await screenshot(page, '12-session-expired');
  await assertAccessible(page, 'the expired-session login form');

  await page.unroute('**/api/token/refresh');
  await logInAndWait(page, 'alice');
  await visible(siteRow(page, ALICE_SITE));
});

// ------------------------------------------------------------------------------ administration

const ENDED_BY_ADMIN_TEXT = 'An administrator ended your session. Ask them if you think this is a mistake.';
const CAROL = { name: 'carol', password: 'carol-password-4' };
let admin;

function adminRow(page, tbody, name) {
  return page.locator(`#${tbody} tr`, { has: page.locator('th', { hasText: new RegExp(`^${name}$`) }) });
}

async function openAdmin(page) {
  await page.getByRole('link', { name: 'Admin' }).click();
  await visible(page.getByRole('heading', { name: 'Administration', level: 1 }));
  await visible(adminRow(page, 'agents-body', 'agent-1'));
}

scenario('the administrator registers an agent, sees its key once, rotates it and revokes it', async () => {
  admin = await openDashboard('root', main);
  await logInAndWait(admin.page, ADMIN.name, ADMIN.password);
  const { page } = admin;
  await openAdmin(page);
  // agent-1 is online on the hub this backend is linked to, since it connected.
  const agent1 = adminRow(page, 'agents-body', 'agent-1');
  await visible(agent1.getByText('Online'));
  await visible(agent1.getByText(`on ws://127.0.0.1:${platform.hubPort}/`));
  assert.equal(await agent1.locator('time').count(), 2, 'since and last seen are shown');
  await visible(adminRow(page, 'commanders-body', 'backend-1'));
  await visible(adminRow(page, 'hubs-body', 'hub-1'));
  await visible(adminRow(page, 'users-body', 'alice'));

  await page.getByLabel('Agent id').fill('agent-e2e');
  await page.getByLabel('Trusted commanders', { exact: true }).fill('backend-1');
  await page.getByRole('button', { name: 'Register agent' }).click();
  const panel = page.getByRole('region', { name: 'New key for agent agent-e2e' });
  await visible(panel);
  const key = await page.locator('#admin-key-value').textContent();
  assert.match(key, /^ak_/);
  await visible(page.getByRole('button', { name: 'Copy key' }));
  await screenshot(page, '20-admin-new-key');
  await assertAccessible(page, 'the admin console with a new key');
  await page.getByRole('button', { name: 'I have stored it' }).click();
  await hidden(panel);
  await visible(adminRow(page, 'agents-body', 'agent-e2e'));
  assert.equal(await page.evaluate((k) => document.documentElement.outerHTML.includes(k), key), false,
    'the key is gone from the page once stored');
  await visible(adminRow(page, 'agents-body', 'agent-e2e').getByText('Not seen'));

  await page.getByRole('button', { name: 'Rotate the key of agent-e2e' }).click();
  await visible(panel);
  const rotated = await page.locator('#admin-key-value').textContent();
  assert.match(rotated, /^ak_/);
  assert.notEqual(rotated, key);
  await page.getByRole('button', { name: 'I have stored it' }).click();
  await hidden(panel);
  // Lists never carry keys.
  const listed = await page.evaluate(async () => {
    const login = await fetch('/api/login', { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username: 'root', password: 'root-password-3' }) }).then((r) => r.json());
    return fetch('/api/admin/agents', { headers: { Authorization: `Bearer ${login.token}` } }).then((r) => r.text());
  });
  assert.ok(listed.includes('agent-e2e') && !listed.includes(key) && !listed.includes(rotated));

  await page.getByRole('button', { name: 'Revoke agent-e2e' }).click();
  const dialog = page.getByRole('dialog', { name: 'Revoke agent agent-e2e?' });
  await visible(dialog);
  await dialog.getByRole('button', { name: 'Revoke' }).click();
  await hidden(adminRow(page, 'agents-body', 'agent-e2e'));
  await screenshot(page, '21-admin-console', { fullPage: true });
  await assertAccessible(page, 'the admin console');
});

scenario("the administrator adds, disables and deletes a user; the user's open dashboard is logged out at once", async () => {
  const { page } = admin;
  const addUser = page.getByRole('form', { name: 'Add a user' });
  await addUser.getByLabel('Username').fill(CAROL.name);
  await addUser.getByLabel('Password').fill(CAROL.password);
  await page.getByRole('button', { name: 'Add user' }).click();
  await visible(adminRow(page, 'users-body', CAROL.name));

  const carol = await openDashboard('carol', main);
  await logInAndWait(carol.page, CAROL.name, CAROL.password);
  assert.equal(await carol.page.locator('#main-nav').isHidden(), true, 'no Admin section for a user');

  await page.getByRole('button', { name: `Disable ${CAROL.name}` }).click();
  await visible(adminRow(page, 'users-body', CAROL.name).getByText('Disabled'));
  // Closed by the server at once, not at carol's next request.
  await visible(carol.page.getByText(ENDED_BY_ADMIN_TEXT), 3000);
  await visible(carol.page.getByRole('heading', { name: 'Log in to Citrus' }));
  await logIn(carol.page, CAROL.name, CAROL.password);
  await visible(carol.page.getByRole('alert').filter({ hasText: 'This account is disabled. Ask an administrator to enable it.' }));

  await page.getByRole('button', { name: `Enable ${CAROL.name}` }).click();
  await visible(adminRow(page, 'users-body', CAROL.name).getByText('Active'));
  await logInAndWait(carol.page, CAROL.name, CAROL.password);

  await page.getByRole('button', { name: `Delete ${CAROL.name}` }).click();
  const dialog = page.getByRole('dialog', { name: `Delete ${CAROL.name}?` });
  await visible(dialog);
  await dialog.getByRole('button', { name: 'Delete user' }).click();
  await hidden(adminRow(page, 'users-body', CAROL.name));
  await visible(carol.page.getByText(ENDED_BY_ADMIN_TEXT), 3000);
  const closes = parsedFrames(carol.w.received).filter((m) => m.type === 'error');
  assert.ok(closes.length >= 2, 'each ended session was told before its socket closed');
  await logIn(carol.page, CAROL.name, CAROL.password);
  await visible(carol.page.getByRole('alert').filter({ hasText: 'The username or password is not right.' }));
  await screenshot(carol.page, '22-deleted-user-logged-out');
});

scenario('the administrator reviews the flagged events, acknowledges one, and filters the trail', async () => {
  const { page } = admin;
  // bob's wrong password and his look at alice's site were flagged earlier.
  await page.getByRole('link', { name: 'Sites', exact: true }).click();
  await openAdmin(page);
  const summary = page.locator('#flagged-summary');
  await page.waitForFunction(() => /wait for review/.test(document.getElementById('flagged-summary').textContent));
  const before = Number.parseInt(await summary.textContent(), 10);
  assert.ok(before >= 1, `flagged events wait for review: ${await summary.textContent()}`);
  const first = page.locator('#flagged-body tr').filter({ has: page.getByRole('button', { name: /^Acknowledge event/ }) }).first();
  await first.getByRole('button', { name: /^Acknowledge event/ }).click();
  await page.waitForFunction((n) => Number.parseInt(document.getElementById('flagged-summary').textContent, 10) === n, before - 1);
  await visible(page.locator('#flagged-body').getByText('By user:3').first());

  // The trail, filtered: the administration events with outcome ok, then a time range with none.
  await page.getByLabel('Kind').selectOption('administration');
  await page.getByLabel('Outcome').fill('ok');
  await page.getByRole('button', { name: 'Show events' }).click();
  // agent.register twice: the seed's (actor cli) and the console's.
  await visible(page.locator('#audit-body tr').filter({ hasText: 'agent.register' }).filter({ hasText: 'user:3' }));
  await visible(page.locator('#audit-body').getByText('user.delete', { exact: true }));
  assert.equal(await page.locator('#audit-body').getByText('denied').count(), 0);
  await page.getByLabel('Actor').fill('user:3');
  await page.getByLabel('From').fill('2099-01-01T00:00');
  await page.getByRole('button', { name: 'Show events' }).click();
  await visible(page.locator('#audit-body').getByText('No events match.'));
  await screenshot(page, '23-admin-audit', { fullPage: true });
  await assertAccessible(page, 'the audit review');
});

scenario('a non-administrator sees no Admin section and gets the same refusal on every admin route', async () => {
  const { page } = alice;
  assert.equal(await page.locator('#main-nav').isHidden(), true);
  await page.evaluate(() => {
    window.location.hash = '#/admin';
  });
  await visible(page.getByRole('heading', { name: 'Your sites', level: 1 }));
  assert.equal(await page.locator('#admin-view').isHidden(), true);
  const answers = await page.evaluate(async (password) => {
    const login = await fetch('/api/login', { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username: 'alice', password }) }).then((r) => r.json());
    const calls = [
      ['GET', '/api/admin/agents'], ['POST', '/api/admin/agents', { agentId: 'x', trustedCommanders: [] }],
      ['POST', '/api/admin/agents/agent-1/rotate'], ['DELETE', '/api/admin/agents/agent-1'],
      ['PUT', '/api/admin/agents/agent-1/grants', { grants: [] }],
      ['GET', '/api/admin/commanders'], ['POST', '/api/admin/commanders', { commanderId: 'x', agents: [] }],
      ['POST', '/api/admin/commanders/backend-1/rotate'], ['DELETE', '/api/admin/commanders/backend-1'],
      ['PUT', '/api/admin/commanders/backend-1/grants', { grants: [] }],
      ['GET', '/api/admin/hubs'], ['POST', '/api/admin/hubs', { hubId: 'x' }],
      ['POST', '/api/admin/hubs/hub-1/rotate'], ['DELETE', '/api/admin/hubs/hub-1'],
      ['GET', '/api/admin/users'], ['POST', '/api/admin/users', { username: 'x', password: 'y' }],
      ['POST', '/api/admin/users/2/disable'], ['POST', '/api/admin/users/2/enable'],
      ['POST', '/api/admin/users/2/password', { password: 'z' }], ['DELETE', '/api/admin/users/2'],
      ['GET', '/api/admin/audit'], ['GET', '/api/admin/audit/flagged'], ['POST', '/api/admin/audit/1/ack'],
    ];
    const out = [];
    for (const [method, path, body] of calls) {
      const init = { method, headers: { Authorization: `Bearer ${login.token}` } };
      if (body) {
        init.headers['Content-Type'] = 'application/json';
        init.body = JSON.stringify(body);
      }
      const r = await fetch(path, init);
      out.push({ route: `${method} ${path}`, status: r.status, body: await r.text() });
      await new Promise((resolve) => setTimeout(resolve, 120));  // under the per-address rate
    }
    return out;
  }, USERS.alice);
  for (const a of answers) {
    assert.equal(a.status, 403, a.route);
    assert.equal(a.body, '{"success":false,"message":"Operation not allowed"}', a.route);
  }
  await visible(page.getByText('Live updates on'));  // still logged in, nothing changed for alice
});

scenario('logging out forgets the session, and the server refuses its token from then on', async () => {
  const { page, w } = bob;
  const tokens = parsedFrames(w.sent).filter((m) => m.type === 'auth' || m.type === 'reauth').map((m) => m.token);
  const token = tokens[tokens.length - 1];
  const sitesWith = (t) => fetch(`${main.origin}/api/sites`, { headers: { Authorization: `Bearer ${t}` } }).then((r) => r.status);
  assert.equal(await sitesWith(token), 200);
  await page.getByRole('button', { name: 'Log out' }).click();
  await visible(page.getByText('You have logged out.'));
  assert.equal(await sitesWith(token), 401, 'the token no longer works at the server');
  assert.ok(w.responses.some((r) => r.url.endsWith('/api/logout') && r.status === 200), 'the page told the server');
  await page.evaluate(() => {
    window.location.hash = '#/';
  });
  await visible(page.getByRole('heading', { name: 'Log in to Citrus' }));
  assert.equal(await page.locator('tr.site-row').count(), 0);
  const sockets = w.sockets.length;
  await sleep(1500);
  assert.equal(w.sockets.length, sockets, 'no reconnection after logging out');
});

scenario('no page loaded anything from elsewhere, broke the CSP or threw an error', async () => {
  assert.ok(opened.length >= 3);
  for (const { name, page, w, origin } of opened) {
    for (const url of w.requests) assert.ok(url.startsWith(`${origin}/`), `${name} loaded ${url}`);
    for (const url of w.sockets) assert.ok(url.startsWith(origin.replace('http:', 'ws:')), `${name} connected to ${url}`);
    assert.deepEqual(w.pageErrors, [], `${name}: script errors`);
    assert.deepEqual(w.cspConsole, [], `${name}: CSP messages`);
    assert.deepEqual(await page.evaluate(() => window.__cspViolations), [], `${name}: CSP violations`);
  }
});

scenario('the backend, hub and agent shut down cleanly, with no sanitizer report', async () => {
  await browser.close();
  browser = null;
  const ended = await platform.shutdown();
  assert.deepEqual(ended.map((e) => e.name).sort(), ['agent', 'backend', 'backend-short', 'hub']);
  for (const e of ended) {
    assert.deepEqual(e.sanitizer, [], `${e.name} reported a sanitizer error`);
    assert.equal(e.code, 0, `${e.name} exit status after SIGTERM`);
  }
});
