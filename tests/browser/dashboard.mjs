// Browser checks of the embedded dashboard, run by tests/e2e/dashboard_browser.rs
// against a backend it filled through a real broker. Each check opens a
// fresh page, fails on any console error it did not expect, and saves a
// screenshot. Exit code 0 only if every check passed.

import { chromium } from 'playwright-core';
import { createHmac } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const BASE = process.env.KANADE_URL;
const TOKEN = process.env.KANADE_TOKEN;
const FIX = JSON.parse(process.env.KANADE_FIXTURE);
const SHOTS = process.env.SCREENSHOT_DIR;
/** A Windows agent binary whose VERSIONINFO says `FIX.release_version`. */
const AGENT_EXE = process.env.KANADE_AGENT_EXE;
mkdirSync(SHOTS, { recursive: true });

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});

function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

function assertEq(actual, expected, message) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${message}: expected ${e}, got ${a}`);
}

/** A fresh context; `token` is put in localStorage before any page script. */
async function open(path, { token = TOKEN, allow = [] } = {}) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 }, acceptDownloads: true });
  if (token !== null) {
    await context.addInitScript((t) => {
      if (!sessionStorage.getItem('kanade.test.seeded')) {
        localStorage.setItem('kanade.token', t);
        sessionStorage.setItem('kanade.test.seeded', '1');
      }
    }, token);
  }
  const page = await context.newPage();
  const errors = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !allow.some((re) => re.test(msg.text()))) errors.push(msg.text());
  });
  page.on('pageerror', (err) => errors.push(`uncaught: ${err.message}`));
  lastPage = page;
  await page.goto(BASE + path);
  return { page, context, errors };
}

async function apiGet(path) {
  const res = await fetch(BASE + path, { headers: { Authorization: `Bearer ${TOKEN}` } });
  assert(res.ok, `GET ${path} → ${res.status}`);
  return res.json();
}

/** Any call with the service token (or `token`): `{ status, data }` (JSON, or text). */
async function apiCall(method, path, { body, token = TOKEN } = {}) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(BASE + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  return { status: res.status, data };
}

/** `obj` with its keys sorted, to compare JSON objects whatever their key order. */
function byKey(obj) {
  return Object.fromEntries(Object.entries(obj).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** POSTs `bytes` as the multipart field `file` with the service token; the JSON answer. */
async function apiUpload(path, bytes, name) {
  const form = new FormData();
  form.append('file', new Blob([bytes]), name);
  const res = await fetch(BASE + path, { method: 'POST', headers: { Authorization: `Bearer ${TOKEN}` }, body: form });
  const text = await res.text();
  if (!res.ok) throw new Error(`POST ${path} → ${res.status} ${text}`);
  return JSON.parse(text);
}

/** Non-background pixels drawn on the chart canvases inside `selector`. */
async function drawnPixels(page, selector) {
  return page.$eval(selector, (root) => {
    let n = 0;
    for (const canvas of root.querySelectorAll('canvas')) {
      const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
      for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n += 1;
    }
    return n;
  });
}

async function legend(page, selector) {
  return page.$$eval(`${selector} .u-legend .u-series:not(:first-child) .u-label`, (els) => els.map((e) => e.textContent));
}

async function tableColumn(page, selector, col) {
  return page.$$eval(`${selector} tbody tr`, (rows, c) => rows.map((r) => r.children[c].textContent.trim()), col);
}

/** The cell texts of the row of `selector`'s table whose first cell is `key` (null if none). */
async function rowOf(page, selector, key) {
  return page.$$eval(`${selector} tbody tr`, (rows, k) => {
    const row = rows.find((r) => r.children[0].textContent.trim() === k);
    return row ? [...row.children].map((c) => c.textContent.trim()) : null;
  }, key);
}

let lastPage = null;
const checks = [];
const check = (name, fn) => checks.push({ name, fn });

check('a bad token lands on the login page, and the service token logs in', async () => {
  const allow = [/status of 401/];
  const { page, context, errors } = await open('/agents?q=SIM', { token: 'not-a-valid-token', allow });
  await page.waitForURL((u) => u.pathname === '/login');
  assertEq(new URL(page.url()).searchParams.get('next'), '/agents?q=SIM', 'next keeps the deep link');
  await page.getByRole('heading', { name: 'Log in to kanade' }).waitFor();
  await page.screenshot({ path: join(SHOTS, 'login.png') });
  await page.fill('input[name=token]', 'still-wrong');
  await page.click('form[aria-label="Service token"] button');
  await page.getByText('The backend does not accept this token.').waitFor();
  await page.fill('input[name=token]', TOKEN);
  await page.click('form[aria-label="Service token"] button');
  await page.waitForURL((u) => u.pathname === '/agents' && u.searchParams.get('q') === 'SIM');
  await page.waitForSelector('section[aria-label=Agents] tbody tr');
  await page.getByText('admin', { exact: false }).first().waitFor();
  assertEq(errors, [], 'console errors');
  await context.close();
});

check('account login: the forced password change, then the deep link; logout', async () => {
  const { page, context, errors } = await open('/results?status=failure', { token: null, allow: [/status of 401/] });
  await page.waitForURL((u) => u.pathname === '/login');
  await page.fill('input[name=username]', 'admin');
  await page.fill('input[name=password]', 'wrong-password');
  await page.click('form[aria-label="Account login"] button');
  await page.getByText('Wrong username, password or code.').waitFor();
  await page.fill('input[name=password]', FIX.admin_password);
  await page.click('form[aria-label="Account login"] button');
  await page.waitForSelector('form[aria-label="Change password"]');
  await page.fill('input[name=new]', 'a-new-password-2');
  await page.click('form[aria-label="Change password"] button');
  await page.waitForURL((u) => u.pathname === '/results' && u.searchParams.get('status') === 'failure');
  await page.waitForSelector('#results-table tbody tr');
  await page.getByText('admin · admin').waitFor();
  await page.click('#logout');
  await page.waitForURL((u) => u.pathname === '/login');
  assertEq(await page.evaluate(() => localStorage.getItem('kanade.token')), null, 'token forgotten');
  assertEq(errors, [], 'console errors');
  await context.close();
});

/** POST as JSON with a bearer; the parsed answer (or null). */
async function apiPost(path, body, token = TOKEN) {
  const res = await fetch(BASE + path, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  assert(res.ok, `${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** RFC 6238 code (SHA-1, 6 digits, 30 s) of a base32 secret at `secs`. */
function totp(secret, secs) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const bits = [...secret.replace(/=+$/, '')].map((c) => alphabet.indexOf(c).toString(2).padStart(5, '0')).join('');
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(secs / 30)));
  const mac = createHmac('sha1', key).update(counter).digest();
  const off = mac[mac.length - 1] & 15;
  return String((mac.readUInt32BE(off) & 0x7fffffff) % 1e6).padStart(6, '0');
}

check('account login with a second factor: the code is asked for, then accepted', async () => {
  await apiPost('/api/accounts', { username: 'mfa-user', password: 'mfa-password-1', role: 'viewer' });
  const { token } = await apiPost('/api/auth/login', { username: 'mfa-user', password: 'mfa-password-1' });
  const { secret } = await apiPost('/api/auth/mfa/init', {}, token);
  const now = Date.now() / 1000;
  await apiPost('/api/auth/mfa/verify', { secret, code: totp(secret, now) }, token);

  const { page, context, errors } = await open('/agents', { token: null, allow: [/status of 401/] });
  await page.waitForURL((u) => u.pathname === '/login');
  await page.fill('input[name=username]', 'mfa-user');
  await page.fill('input[name=password]', 'mfa-password-1');
  await page.click('form[aria-label="Account login"] button');
  await page.getByText('Enter the code from your authenticator app.').waitFor();
  // The enrolling code is spent: refused. The next one logs in.
  await page.fill('input[name=totp_code]', totp(secret, now));
  await page.click('form[aria-label="Account login"] button');
  await page.getByText('Wrong username, password or code.').waitFor();
  await page.fill('input[name=totp_code]', totp(secret, now + 30));
  await page.click('form[aria-label="Account login"] button');
  await page.waitForURL((u) => u.pathname === '/agents');
  await page.getByText('mfa-user · viewer').waitFor();
  assertEq(errors, [], 'console errors');
  await context.close();
});

check('passkeys: added on the Account page, then a sign-in without a username; a replayed answer is refused', async () => {
  // An IP address cannot be a relying party: the dashboard at localhost.
  const LOCAL = BASE.replace('127.0.0.1', 'localhost');
  await apiPost('/api/accounts', { username: 'key-user', password: 'key-password-1', role: 'operator' });
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  const errors = [];
  // Logged out, the login page's identity check answers 401.
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !/status of 401/.test(msg.text())) errors.push(msg.text());
  });
  page.on('pageerror', (err) => errors.push(`uncaught: ${err.message}`));
  lastPage = page;
  // Chromium's own authenticator: discoverable credentials, user verified.
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2', transport: 'internal', hasResidentKey: true,
      hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true,
    },
  });
  await page.goto(LOCAL + '/login');
  await page.fill('form[aria-label="Account login"] input[name=username]', 'key-user');
  await page.fill('form[aria-label="Account login"] input[name=password]', 'key-password-1');
  await page.click('form[aria-label="Account login"] button');
  await page.getByText('key-user · operator').waitFor();
  await page.click('#whoami');
  await page.waitForURL((u) => u.pathname === '/account');
  await page.getByText('No passkeys yet.').waitFor();
  await page.fill('form[aria-label="Add a passkey"] input[name=name]', 'virtual key');
  await page.fill('form[aria-label="Add a passkey"] input[name=password]', 'key-password-1');
  await page.click('form[aria-label="Add a passkey"] button');
  await page.locator('table[aria-label="Passkeys"]').getByText('virtual key').waitFor();
  const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
  assertEq(credentials.map((c) => c.isResidentCredential), [true], 'one discoverable credential');
  await page.screenshot({ path: join(SHOTS, 'account.png'), fullPage: true });

  await page.click('#logout');
  await page.waitForURL((u) => u.pathname === '/login');
  const finish = page.waitForRequest((r) => r.url().endsWith('/api/auth/passkey/login/finish'));
  await page.click('button.passkey');
  const sent = (await finish).postData();
  await page.getByText('key-user · operator').waitFor();
  assertEq(new URL(page.url()).pathname, '/', 'signed in, at the dashboard');

  // The same answer again: its challenge is used up (400); under a fresh
  // challenge it signs the wrong one (401).
  const post = (path, body) => fetch(BASE + path, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body,
  });
  assertEq((await post('/api/auth/passkey/login/finish', sent)).status, 400, 'replayed answer');
  const fresh = await (await post('/api/auth/passkey/login/start', '{}')).json();
  const moved = JSON.stringify({ ...JSON.parse(sent), challenge_id: fresh.challenge_id });
  assertEq((await post('/api/auth/passkey/login/finish', moved)).status, 401, 'answer moved to a new challenge');
  assertEq(errors, [], 'console errors');
  await context.close();
});

check('a permission group shows only its pages in the menu; the others answer 403', async () => {
  await apiPost('/api/permission-groups', { name: 'job-desk', features: ['jobs'] });
  await apiPost('/api/accounts', { username: 'desk', password: 'desk-password-1', role: 'viewer', permission_group: 'job-desk' });
  const { token } = await apiPost('/api/auth/login', { username: 'desk', password: 'desk-password-1' });
  const { page, context, errors } = await open('/jobs', { token, allow: [/status of 403/] });
  await page.getByText('desk · viewer').waitFor();
  const shown = await page.$$eval('header nav a[data-nav]', (as) => as.filter((a) => !a.hidden).map((a) => a.dataset.nav));
  assertEq(shown, ['jobs'], 'menu entries of a jobs-only account');
  await page.goto(BASE + '/results');
  await page.getByText('requires activity').waitFor();
  assertEq(errors, [], 'console errors');
  await context.close();
});

check('a set-up link handed over by an admin sets the password once, then the account logs in', async () => {
  const made = await apiPost('/api/accounts', { username: 'linked', role: 'viewer', email: 'linked@example.com' });
  assertEq(made.setup_link_sent, false, 'mail is off in the fixture');
  const link = new URL(made.setup_link);
  const { page, context, errors } = await open(link.pathname, { token: null, allow: [/status of 40[14]/] });
  await page.getByText('Welcome, linked').waitFor();
  await page.fill('input[name=password]', 'linked-password-1');
  await page.fill('input[name=again]', 'linked-password-1');
  await page.click('form[aria-label="Choose a password"] button');
  await page.getByText('Your password is set.').waitFor();
  await page.goto(BASE + link.pathname);
  await page.getByText('This link is not valid').waitFor();
  await page.goto(BASE + '/login');
  await page.fill('form[aria-label="Account login"] input[name=username]', 'linked');
  await page.fill('form[aria-label="Account login"] input[name=password]', 'linked-password-1');
  await page.click('form[aria-label="Account login"] button');
  await page.getByText('linked · viewer').waitFor();
  assertEq(errors, [], 'console errors');
  await context.close();
});

check('security: a permission group and an account made by address, its link handed over, disabled', async () => {
  const { page, context, errors } = await open('/security');
  await page.waitForSelector('#accounts table');
  const form = page.locator('form[aria-label="Create a permission group"]');
  await form.locator('input[name=name]').fill('auditors');
  await form.locator('input[value=audit]').check();
  await form.locator('button').click();
  await page.waitForSelector('#permission-groups td:text-is("auditors")');
  const acc = page.locator('form[aria-label="Create an account"]');
  await acc.locator('input[name=username]').fill('sally');
  await acc.locator('input[name=email]').fill('sally@example.com');
  await acc.locator('select[name=permission_group]').selectOption('auditors');
  await acc.locator('button').click();
  await page.getByText(/create account sally: done; hand over this link: http.*\/password-setup\//).waitFor();
  const row = page.locator('#accounts tr', { has: page.locator('td:text-is("sally")') });
  await row.getByText('group auditors').waitFor();
  await row.locator('button:text-is("Reset link")').click();
  await page.getByText(/reset link for sally: done; hand over this link/).waitFor();
  await row.locator('button:text-is("Disable")').click();
  await row.locator('.badge:text-is("disabled")').waitFor();
  // The group has a member now: deleting it is refused in place.
  const grow = page.locator('#permission-groups tr', { has: page.locator('td:text-is("auditors")') });
  await grow.locator('button:text-is("Delete")').click();
  await page.getByText(/delete group auditors: .*member/).waitFor();
  await page.screenshot({ path: join(SHOTS, 'security.png'), fullPage: true });
  assertEq(errors.filter((e) => !/status of 409/.test(e)), [], 'console errors');
  await context.close();
});

check('dashboard: health, fleet charts, top PCs, investigations, failures', async () => {
  const { page, context, errors } = await open('/');
  await page.waitForSelector('#fleet-health .card');
  await page.waitForSelector('#fleet-cpu canvas');
  await page.waitForSelector('#fleet-mem canvas');
  const ttd = await page.evaluate(() => {
    const m = performance.getEntriesByName('kanade:dashboard-data')[0];
    return m ? Math.round(m.startTime) : null;
  });
  assert(ttd !== null, 'dashboard marked its data on screen');
  console.log(`time-to-data (dashboard, small fleet): ${ttd} ms`);
  const cards = await page.$$eval('#fleet-health .card .value', (els) => els.map((e) => e.textContent.trim()));
  assertEq(cards[1], String(FIX.pcs.length), 'known agents');
  assertEq(await legend(page, '#fleet-cpu'), ['average', 'max'], 'fleet CPU series');
  assert((await drawnPixels(page, '#fleet-cpu')) > 2000, 'fleet CPU chart drew its lines');
  assert((await drawnPixels(page, '#fleet-mem')) > 2000, 'fleet memory chart drew its lines');
  await page.waitForSelector('#top-pcs tbody tr');
  const top = await tableColumn(page, '#top-pcs', 0);
  assertEq([...top].sort(), [...FIX.pcs].sort(), 'top PCs lists every simulated PC');
  const inv = await tableColumn(page, '#investigations', 0);
  assertEq([...inv].sort(), FIX.investigated, 'active investigations');
  const failed = await tableColumn(page, '#recent-failures', 0);
  assertEq(failed, [FIX.failed_result], 'recent failed results');
  await page.screenshot({ path: join(SHOTS, 'dashboard.png'), fullPage: true });
  // Range picker: 1h is a deep link that survives reload.
  const fleetAsks = [];
  page.on('request', (r) => {
    if (r.url().includes('/api/perf/fleet')) fleetAsks.push(new URL(r.url()).searchParams);
  });
  await page.click('button:text-is("1h")');
  await page.waitForURL((u) => u.searchParams.get('range') === '1h');
  await page.reload();
  await page.waitForSelector('button[aria-pressed=true]:text-is("1h")');
  await page.waitForSelector('#fleet-cpu canvas');
  // A preset's charts start on a step boundary (a whole first bucket).
  assert(fleetAsks.length >= 2, `fleet series asked: ${fleetAsks.length}`);
  for (const q of fleetAsks) {
    assertEq(q.get('step'), '60s', 'the 1h preset steps by the minute');
    assertEq(Date.parse(q.get('from')) % 60_000, 0, `from ${q.get('from')} on a minute`);
  }
  // Keyboard: the first Tab reaches the skip link, which moves focus to the page.
  await page.keyboard.press('Tab');
  assertEq(await page.evaluate(() => document.activeElement.className), 'skip', 'first Tab stop');
  await page.keyboard.press('Enter');
  assertEq(await page.evaluate(() => document.activeElement.id), 'app', 'skip link focuses the content');
  // Dark theme.
  await page.click('#theme-toggle');
  assertEq(await page.evaluate(() => document.documentElement.dataset.theme), 'dark', 'theme toggled');
  await page.waitForSelector('#fleet-cpu canvas');
  await page.screenshot({ path: join(SHOTS, 'dashboard-dark.png'), fullPage: true });
  assertEq(errors, [], 'console errors');
  await context.close();
});

check('dashboard: auto-refresh updates in place, without a loading flash', async () => {
  const { page, context, errors } = await open('/?range=1h&refresh=5');
  await page.waitForSelector('#fleet-cpu canvas');
  await page.waitForSelector('#recent-failures tbody tr');
  const first = await page.textContent('h1 .hint');
  await page.evaluate(() => {
    document.querySelector('#fleet-cpu canvas').dataset.tag = 'kept';
    window.__flashes = 0;
    new MutationObserver((records) => {
      for (const r of records) {
        for (const n of r.addedNodes) if (n.nodeType === 1 && n.matches('.state.loading, .state.error')) window.__flashes += 1;
      }
    }).observe(document.getElementById('app'), { childList: true, subtree: true });
  });
  await page.waitForFunction((t) => document.querySelector('h1 .hint').textContent !== t, first, { timeout: 15_000 });
  assertEq(await page.$eval('#fleet-cpu canvas', (c) => c.dataset.tag), 'kept', 'chart updated in place');
  assertEq(await page.evaluate(() => window.__flashes), 0, 'no loading or error state during refresh');
  assertEq(errors, [], 'console errors');
  await context.close();
});

check('agents: list, search in the URL surviving reload, status filter, paging', async () => {
  const { page, context, errors } = await open('/agents');
  await page.waitForSelector('section[aria-label=Agents] tbody tr');
  const ids = await tableColumn(page, 'section[aria-label=Agents]', 0);
  assertEq([...ids].sort(), [...FIX.pcs].sort(), 'every agent listed');
  await page.screenshot({ path: join(SHOTS, 'agents.png'), fullPage: true });
  await page.fill('input[name=q]', '00003');
  await page.waitForURL((u) => u.searchParams.get('q') === '00003');
  await page.waitForFunction(() => document.querySelectorAll('section[aria-label=Agents] tbody tr').length === 1);
  await page.reload();
  await page.waitForSelector('section[aria-label=Agents] tbody tr');
  assertEq(await page.inputValue('input[name=q]'), '00003', 'search survives reload');
  assertEq(await tableColumn(page, 'section[aria-label=Agents]', 0), ['SIM-00003'], 'filtered rows after reload');
  await page.selectOption('select[name=status]', 'offline');
  await page.waitForURL((u) => u.searchParams.get('status') === 'offline');
  await page.getByText('No agent matches.').waitFor();
  await page.goBack();
  await page.waitForURL((u) => !u.searchParams.get('status'));
  await page.waitForSelector('section[aria-label=Agents] tbody tr');
  await page.click('a:text-is("SIM-00003")');
  await page.waitForURL((u) => u.pathname === '/agents/SIM-00003');
  assertEq(errors, [], 'console errors');
  await context.close();
});

check('agent: host charts, zoom, latest processes, stacked timeline with top-N then other', async () => {
  const pc = FIX.investigated[0];
  const { page, context, errors } = await open(`/agents/${pc}?range=24h`);
  for (const id of ['cpu', 'mem', 'disk', 'net']) {
    await page.waitForSelector(`#host-${id} canvas`);
    assert((await drawnPixels(page, `#host-${id}`)) > 1000, `host ${id} chart drew`);
  }
  assertEq(await legend(page, '#host-mem'), ['used', 'total'], 'memory series');
  assertEq(await legend(page, '#host-net'), ['rx', 'tx'], 'network series');
  await page.waitForSelector('#latest-processes tbody tr');
  assertEq((await tableColumn(page, '#latest-processes', 1)).length, 10, 'latest tick has 10 processes');
  await page.waitForSelector('#process-timeline canvas');
  const api = await apiGet(`/api/agents/${pc}/processes/timeline?top=5&step=5m&from=${encodeURIComponent(new Date(Date.now() - 86_400_000).toISOString())}`);
  assertEq(api.names.length, 6, 'five names and other from the API');
  assertEq(api.names[5], 'other', 'other comes last');
  assertEq(await legend(page, '#process-timeline'), api.names, 'timeline legend = top-5 names, then other');
  assert((await drawnPixels(page, '#process-timeline')) > 3000, 'stacked timeline drew');
  await page.screenshot({ path: join(SHOTS, 'agent.png'), fullPage: true });
  const colours = async () => page.$$eval('#process-timeline .u-legend .u-series:not(:first-child)', (rows) =>
    Object.fromEntries(rows.map((r) => [r.querySelector('.u-label').textContent,
      getComputedStyle(r.querySelector('.u-marker')).borderColor])));
  const before = await colours();
  await page.selectOption('select[name=top]', '3');
  await page.waitForURL((u) => u.searchParams.get('top') === '3');
  await page.waitForFunction(() => document.querySelectorAll('#process-timeline .u-legend .u-series').length === 5);
  const three = await legend(page, '#process-timeline');
  assertEq(three.length, 4, 'top 3 plus other');
  assertEq(three[3], 'other', 'other last with top 3');
  assertEq(three.slice(0, 3), api.names.slice(0, 3), 'top 3 are the first three of top 5');
  const after = await colours();
  for (const name of three.slice(0, 3)) assertEq(after[name], before[name], `colour of ${name} kept`);
  // Drag-to-zoom puts an absolute window in the URL; back undoes it.
  const over = await page.$('#host-cpu .u-over');
  await over.scrollIntoViewIfNeeded();
  const box = await over.boundingBox();
  await page.mouse.move(box.x + box.width * 0.6, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.9, box.y + box.height / 2, { steps: 8 });
  await page.mouse.up();
  await page.waitForURL((u) => u.searchParams.get('from') && u.searchParams.get('to'));
  await page.getByText('Reset zoom').waitFor();
  await page.reload();
  await page.getByText('Reset zoom').waitFor();
  await page.waitForSelector('#host-cpu canvas');
  await page.goBack();
  await page.waitForURL((u) => !u.searchParams.get('from'));
  assertEq(errors, [], 'console errors');
  await context.close();
});

check('results: tabs, regex filters in the URL, bad regex error, detail and live tail', async () => {
  const { page, context, errors } = await open('/results', { allow: [/status of 400/] });
  await page.waitForSelector('#results-table tbody tr');
  assertEq((await tableColumn(page, '#results-table', 0)).length, FIX.results, 'every result listed');
  await page.screenshot({ path: join(SHOTS, 'results.png'), fullPage: true });
  await page.click('a:text-is("Failure")');
  await page.waitForURL((u) => u.searchParams.get('status') === 'failure');
  await page.waitForFunction(() => document.querySelectorAll('#results-table tbody tr').length === 1);
  assertEq(await tableColumn(page, '#results-table', 0), [FIX.failed_result], 'failure tab');
  await page.click('a:text-is("All")');
  await page.fill('input[name=job_id]', '^inventory$');
  await page.click('button:text-is("Apply")');
  await page.waitForURL((u) => u.searchParams.get('job_id') === '^inventory$');
  await page.waitForFunction(() => document.querySelectorAll('#results-table tbody tr').length === 4);
  await page.reload();
  await page.waitForSelector('#results-table tbody tr');
  assertEq(await page.inputValue('input[name=job_id]'), '^inventory$', 'filter survives reload');
  assertEq((await tableColumn(page, '#results-table', 0)).length, 4, 'filtered rows after reload');
  await page.fill('input[name=stdout]', '(unclosed');
  await page.click('button:text-is("Apply")');
  await page.waitForSelector('#results-table [data-state=error]');
  const msg = await page.textContent('#results-table [data-state=error]');
  assert(msg.includes('(unclosed'), `error names the pattern: ${msg}`);
  await page.goto(`${BASE}/results/${FIX.failed_result}`);
  await page.getByText('access denied').waitFor();
  await page.getByText('scan aborted').waitFor();
  await page.screenshot({ path: join(SHOTS, 'result-detail.png'), fullPage: true });
  await page.goto(`${BASE}/results/${FIX.running_result}`);
  await page.waitForSelector('.live-dot');
  await page.getByText('waiting for the agent').waitFor();
  await page.screenshot({ path: join(SHOTS, 'result-waiting.png'), fullPage: true });
  // The live tail: output grows while the agent works, then the stored result replaces it.
  await page.goto(`${BASE}/results/${FIX.live_result}`);
  await page.getByText('step 1 of 3').waitFor();
  await page.getByText('live output').waitFor();
  await page.screenshot({ path: join(SHOTS, 'result-live.png'), fullPage: true });
  await page.getByText('step 2 of 3').waitFor();
  await page.getByText('all steps done').waitFor({ timeout: 20_000 });
  await page.waitForSelector('.badge.ok');
  assertEq(await page.$('.live-dot'), null, 'no live marker once finished');
  assertEq(errors, [], 'console errors');
  await context.close();
});

check('health: scan durations by p95, max links to its run', async () => {
  const { page, context, errors } = await open('/scan-health');
  await page.waitForSelector('#scan-durations tbody tr');
  const jobs = await tableColumn(page, '#scan-durations', 0);
  const api = await apiGet(`/api/health/scan_durations?since=${encodeURIComponent(new Date(Date.now() - 86_400_000).toISOString())}`);
  assertEq(jobs, api.map((r) => r.job_id), 'rows in the API order (p95 descending)');
  assertEq([...jobs].sort(), FIX.jobs, 'every job');
  const maxLink = await page.$eval('#scan-durations tbody tr:first-child td:nth-child(7) a', (a) => a.getAttribute('href'));
  assertEq(maxLink, `/results/${api[0].max_result_id}`, 'max links to the slowest run');
  await page.waitForSelector('#jetstream tbody tr');
  // The backend's own metrics: the simulator's samples were received and stored.
  await page.waitForSelector('#backend-metrics tbody tr');
  assert(await page.$('#backend-broker .badge.ok'), 'broker shown connected');
  const ingest = await page.$$eval('#backend-metrics table:first-of-type tbody tr',
    (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent.trim())));
  const host = ingest.find((r) => r[0] === 'host_perf.>');
  assert(host, `a host_perf.> ingest row in ${JSON.stringify(ingest)}`);
  assert(Number(host[2].replace(/\D/g, '')) > 0, `host samples stored: ${host}`);
  await page.screenshot({ path: join(SHOTS, 'health.png'), fullPage: true });
  await page.click(`#scan-durations a[href="${maxLink}"]`);
  await page.waitForURL((u) => u.pathname === maxLink);
  assertEq(errors, [], 'console errors');
  await context.close();
});

check('export: downloads a Parquet file', async () => {
  const { page, context, errors } = await open(`/export?table=host_perf&pc_id=${FIX.pcs[0]}`);
  await page.waitForSelector('form[aria-label=Export]');
  await page.screenshot({ path: join(SHOTS, 'export.png'), fullPage: true });
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.click('button:text-is("Download Parquet")'),
  ]);
  const path = join(SHOTS, '..', download.suggestedFilename());
  await download.saveAs(path);
  const { readFileSync } = await import('node:fs');
  const bytes = readFileSync(path);
  assert(bytes.length > 100, `file has content (${bytes.length} bytes)`);
  assertEq(bytes.subarray(0, 4).toString(), 'PAR1', 'Parquet magic');
  assert(download.suggestedFilename().endsWith('.parquet'), 'file name');
  await page.waitForSelector('#export-status[data-done]');
  assertEq(errors, [], 'console errors');
  await context.close();
});

check('jobs: the catalog, a job\'s YAML, an exec to one PC linked to its results, revoke and unrevoke', async () => {
  const { page, context, errors } = await open('/jobs', { allow: [/status of 400/] });
  await page.waitForSelector('#jobs-table tbody tr');
  assertEq(await page.getAttribute('a[data-nav=jobs]', 'aria-current'), 'page', 'nav marks Jobs');
  const job = (await apiGet('/api/jobs')).find((j) => j.id === FIX.job);
  assert(job, `the API lists ${FIX.job}`);
  const row = await rowOf(page, '#jobs-table', FIX.job);
  assert(row, `the page lists ${FIX.job}`);
  assertEq(row, [FIX.job, job.version, job.description, String(job.live.running), String(job.live.pending), 'active'],
    'id, version, description, live counts, script status');
  await page.screenshot({ path: join(SHOTS, 'jobs.png'), fullPage: true });
  await page.fill('input[name=q]', 'no-such-job');
  await page.waitForURL((u) => u.searchParams.get('q') === 'no-such-job');
  await page.getByText('No job matches.').waitFor();
  await page.fill('input[name=q]', '');
  await page.waitForURL((u) => !u.searchParams.get('q'));
  await page.click(`#jobs-table a:text-is("${FIX.job}")`);
  await page.waitForURL((u) => u.pathname === `/jobs/${FIX.job}`);
  // The YAML as the backend serves it.
  await page.waitForSelector('#job-yaml pre');
  const res = await fetch(`${BASE}/api/jobs/${FIX.job}/yaml`, { headers: { Authorization: `Bearer ${TOKEN}` } });
  assertEq(res.headers.get('content-type'), 'application/yaml', 'YAML content type');
  const yaml = await res.text();
  assert(yaml.includes(`id: ${FIX.job}`) && yaml.includes(job.version), `YAML names the job and its version: ${yaml}`);
  assertEq(await page.textContent('#job-yaml pre'), yaml, 'the page shows the YAML');
  // No target: the backend's 400 is shown in place.
  await page.click('#job-exec button[type=submit]');
  await page.waitForSelector('#exec-result.error-text');
  const refused = await page.textContent('#exec-result');
  assert(refused.includes('target'), `the 400 names the target: ${refused}`);
  // An exec to one PC answers with its exec_id and a link to its results.
  const pc = FIX.pcs[1];
  await page.fill('#job-exec input[name=pcs]', pc);
  await page.fill('#job-exec input[name=jitter]', '5s');
  await page.click('#job-exec button[type=submit]');
  await page.waitForSelector('#exec-result[data-exec-id]');
  const execId = await page.getAttribute('#exec-result', 'data-exec-id');
  assert(/^[0-9a-f-]{36}$/.test(execId), `exec_id: ${execId}`);
  const said = await page.textContent('#exec-result');
  assert(said.includes(`Exec ${execId} sent to 1 target(s): commands.pc.${pc}`), `exec answer: ${said}`);
  const href = `/results?exec_id=${execId}`;
  assertEq(await page.getAttribute('#exec-result a', 'href'), href, 'link to its results');
  const q = new URL(page.url()).searchParams;
  assertEq([q.get('pcs'), q.get('jitter')], [pc, '5s'], 'the exec target is kept in the URL');
  await page.waitForSelector(`#job-executions a[href="${href}"]`);
  await page.screenshot({ path: join(SHOTS, 'job.png'), fullPage: true });
  // Revoke asks first; unrevoke does not.
  page.once('dialog', (d) => d.accept());
  await page.click('#job-info button:text-is("Revoke")');
  await page.waitForSelector('#job-script .badge:text-is("revoked")');
  assertEq((await apiGet('/api/scripts/status'))[FIX.job], 'REVOKED', 'revoked in the API');
  await page.click('#job-info button:text-is("Unrevoke")');
  await page.waitForSelector('#job-script .badge:text-is("active")');
  assertEq((await apiGet('/api/scripts/status'))[FIX.job], 'ACTIVE', 'active again in the API');
  await page.click('#exec-result a');
  await page.waitForURL((u) => u.pathname === '/results' && u.searchParams.get('exec_id') === execId);
  assertEq(await page.inputValue('input[name=exec_id]'), execId, 'results filtered by the exec');
  await page.getByText('No result matches these filters.').waitFor();
  assertEq(errors, [], 'console errors');
  await context.close();
});

check('schedules: coverage counts, next fires, coverage filtered in the URL, disable and enable from the list', async () => {
  const { page, context, errors } = await open('/schedules');
  await page.waitForSelector('#schedules-table tbody tr');
  assertEq(await page.getAttribute('a[data-nav=schedules]', 'aria-current'), 'page', 'nav marks Schedules');
  const cov = (await apiGet('/api/schedules/coverage')).find((c) => c.id === FIX.schedule);
  assert(cov, `the API has coverage for ${FIX.schedule}`);
  assertEq(cov.total, FIX.pcs.length, 'the schedule targets every PC');
  assertEq(cov.ok + cov.fail + cov.running + cov.pending, cov.total, 'states add up');
  assert(cov.ok >= 2, `the fixture's inventory runs count as ok: ${JSON.stringify(cov)}`);
  const preview = await apiGet(`/api/schedules/${FIX.schedule}/preview?count=5`);
  const row = await rowOf(page, '#schedules-table', FIX.schedule);
  assert(row, `the page lists ${FIX.schedule}`);
  assertEq(row, [FIX.schedule, FIX.job, preview.when, preview.tz, 'enabled',
    ...[cov.ok, cov.fail, cov.running, cov.pending, cov.total].map(String), 'Disable'],
  'id, job, when as the backend prints it, tz, status, coverage counts, action');
  await page.screenshot({ path: join(SHOTS, 'schedules.png'), fullPage: true });
  // Detail: next fires (or the note), the coverage table and its state filter.
  await page.click(`#schedules-table a:text-is("${FIX.schedule}")`);
  await page.waitForURL((u) => u.pathname === `/schedules/${FIX.schedule}`);
  if (preview.fires.length) {
    await page.waitForSelector('#schedule-fires li time');
    const fires = await page.$$eval('#schedule-fires li time', (els) => els.map((e) => e.getAttribute('datetime')));
    assertEq(fires, preview.fires, 'next fires');
  } else {
    await page.waitForSelector('#schedule-fires [data-state=empty]');
    assertEq(await page.textContent('#schedule-fires [data-state=empty]'), preview.note, 'the note');
  }
  await page.waitForSelector('#schedule-coverage tbody tr');
  const pcs = await tableColumn(page, '#schedule-coverage', 0);
  assertEq([...pcs].sort(), [...FIX.pcs].sort(), 'coverage lists every PC of the target');
  await page.click('#schedule-coverage button[data-filter=ok]');
  await page.waitForURL((u) => u.searchParams.get('state') === 'ok');
  await page.waitForFunction((n) => document.querySelectorAll('#schedule-coverage tbody tr').length === n, cov.ok);
  await page.reload();
  await page.waitForSelector('#schedule-coverage tbody tr');
  assertEq(await tableColumn(page, '#schedule-coverage', 1), Array(cov.ok).fill('ok'), 'state filter survives reload');
  await page.waitForSelector('#schedule-yaml pre');
  assert((await page.textContent('#schedule-yaml pre')).includes(`id: ${FIX.schedule}`), 'the YAML');
  await page.getByLabel("also revoke the job's script (cascade)").waitFor();
  await page.getByLabel('also kill runs in flight (cascade_kill)').waitFor();
  await page.screenshot({ path: join(SHOTS, 'schedule.png'), fullPage: true });
  // Disable on the list flips the badge; Enable flips it back.
  await page.click('a[data-nav=schedules]');
  await page.waitForURL((u) => u.pathname === '/schedules');
  await page.click(`#schedules-table button[aria-label="Disable ${FIX.schedule}"]`);
  await page.waitForSelector(`#schedules-table button[aria-label="Enable ${FIX.schedule}"]`);
  assertEq((await rowOf(page, '#schedules-table', FIX.schedule))[4], 'disabled', 'the badge says disabled');
  assertEq((await apiGet('/api/schedules')).find((s) => s.id === FIX.schedule).enabled, false, 'disabled in the API');
  assertEq((await apiGet('/api/scripts/status'))[FIX.job] ?? 'ACTIVE', 'ACTIVE', 'no cascade: the script stays active');
  await page.click(`#schedules-table button[aria-label="Enable ${FIX.schedule}"]`);
  await page.waitForSelector(`#schedules-table button[aria-label="Disable ${FIX.schedule}"]`);
  assertEq((await rowOf(page, '#schedules-table', FIX.schedule))[4], 'enabled', 'enabled again');
  assertEq(errors, [], 'console errors');
  await context.close();
});

check('config: edit global with If-Match, a conflicting edit is refused, a PC\'s effective config and groups', async () => {
  const { page, context, errors } = await open('/config', { allow: [/status of 409/] });
  const field = '#config-editor input[name=heartbeat_interval]';
  await page.waitForSelector(field);
  assertEq(await page.getAttribute('a[data-nav=config]', 'aria-current'), 'page', 'nav marks Config');
  // Save sends the whole scope with If-Match.
  await page.fill(field, '20s');
  await page.click('#config-editor button:text-is("Save")');
  await page.waitForSelector('#config-status.hint:has-text("Saved")');
  assertEq((await apiGet('/api/config')).heartbeat_interval, '20s', 'saved through the API');
  // Someone else writes first: the page's next save is refused (409), Reload shows their value.
  const auth = { Authorization: `Bearer ${TOKEN}` };
  const got = await fetch(`${BASE}/api/config`, { headers: auth });
  const tag = got.headers.get('etag');
  assert(tag, 'GET /api/config answers an ETag');
  const put = await fetch(`${BASE}/api/config`, {
    method: 'PUT',
    headers: { ...auth, 'Content-Type': 'application/json', 'If-Match': tag },
    body: JSON.stringify({ heartbeat_interval: '25s' }),
  });
  assertEq(put.status, 200, `the conflicting write: ${await put.clone().text()}`);
  await page.fill(field, '30s');
  await page.click('#config-editor button:text-is("Save")');
  await page.waitForSelector('#config-status.error-text');
  const refused = await page.textContent('#config-status');
  assert(refused.includes('revision'), `the 409 is shown: ${refused}`);
  assertEq((await apiGet('/api/config')).heartbeat_interval, '25s', 'the conflicting write was not overwritten');
  await page.click('#config-editor button:text-is("Reload")');
  await page.waitForFunction((sel) => document.querySelector(sel).value === '25s', field);
  await page.waitForSelector('#config-editor button:text-is("Reload")', { state: 'hidden' });
  // A PC: join a group, then its effective config names where each field comes from.
  const pc = FIX.pcs[0];
  await page.goto(`${BASE}/config?scope=pc&name=${encodeURIComponent(pc)}`);
  await page.waitForSelector('#config-pc-groups input[name=group]');
  await page.waitForSelector('#config-effective tbody tr');
  await page.fill('#config-pc-groups input[name=group]', 'canary');
  await page.click('#config-pc-groups button:text-is("Add")');
  await page.waitForSelector('#config-pc-groups li[data-group=canary]');
  assert((await apiGet(`/api/agents/${pc}/groups`)).groups.includes('canary'), 'the API has the membership');
  await page.waitForSelector('#config-pc-groups-status:has-text("Added to canary.")');
  await page.waitForFunction(() => {
    const row = [...document.querySelectorAll('#config-effective tbody tr')]
      .find((r) => r.children[0].textContent.trim() === 'heartbeat_interval');
    return row && row.children[1].textContent.trim() === '25s';
  });
  assertEq(await rowOf(page, '#config-effective', 'heartbeat_interval'), ['heartbeat_interval', '25s', 'global'],
    'effective heartbeat_interval and its source');
  await page.waitForSelector('#config-groups a:text-is("canary")');
  await page.screenshot({ path: join(SHOTS, 'config.png'), fullPage: true });
  assertEq(errors, [], 'console errors');
  await context.close();
});

check('rollout: a non-PE refused, a release named by its binary, a bad jitter, a group and global targeted, delete refused then done', async () => {
  const allow = [/status of 400/, /status of 409/];
  const { page, context, errors } = await open('/rollout', { allow });
  const version = FIX.release_version;
  await page.waitForSelector('#rollout-releases [data-state=empty]');
  assertEq(await page.getAttribute('a[data-nav=rollout]', 'aria-current'), 'page', 'nav marks Rollout');
  await page.waitForSelector('#rollout-targets tbody tr');
  assertEq(await apiGet('/api/agents/releases'), [], 'no release yet');
  // Not an agent binary: the backend's 400 is shown in place.
  const fileInput = '#rollout-publish input[type=file]';
  await page.setInputFiles(fileInput, { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('not a PE\n') });
  await page.click('#rollout-publish button:text-is("Publish")');
  await page.waitForSelector('#rollout-publish-status.error-text');
  const notPe = await page.textContent('#rollout-publish-status');
  assert(notPe.includes('file'), `the 400 names the file: ${notPe}`);
  assertEq(await apiGet('/api/agents/releases'), [], 'nothing stored');
  // The binary names its release; the bar follows the upload.
  await page.setInputFiles(fileInput, AGENT_EXE);
  await page.click('#rollout-publish button:text-is("Publish")');
  await page.waitForSelector('#rollout-publish-status[data-version]');
  assertEq(await page.getAttribute('#rollout-publish-status', 'data-version'), version, 'named by its VERSIONINFO');
  const bar = await page.$eval('#rollout-publish progress', (p) => [p.value, p.max]);
  assert(bar[1] > 1 && bar[0] === bar[1], `the progress bar is full: ${bar}`);
  const releases = await apiGet('/api/agents/releases');
  assertEq(releases.map((r) => [r.version, r.size]), [[version, readFileSync(AGENT_EXE).length]], 'the API lists the release');
  await page.waitForSelector('#rollout-releases tbody tr');
  const row = await rowOf(page, '#rollout-releases', version);
  assert(row, `the page lists ${version}`);
  assertEq([row[2], row[4], row[5]], [releases[0].digest, '—', 'Delete'], 'digest, no scope targets it yet, delete');
  // A bad jitter is refused, naming it; then group canary targets the release.
  await page.waitForSelector(`#rollout-set select[name=version] option[value="${version}"]`, { state: 'attached' });
  await page.selectOption('#rollout-set select[name=version]', version);
  await page.selectOption('#rollout-set select[name=scope]', 'group');
  await page.fill('#rollout-set input[name=name]', 'canary');
  await page.fill('#rollout-set input[name=jitter]', 'soon');
  await page.click('#rollout-set button:text-is("Roll out")');
  await page.waitForSelector('#rollout-status.error-text');
  const badJitter = await page.textContent('#rollout-status');
  assert(badJitter.includes('jitter'), `the 400 names the jitter: ${badJitter}`);
  await page.fill('#rollout-set input[name=jitter]', '30m');
  await page.click('#rollout-set button:text-is("Roll out")');
  await page.waitForSelector('#rollout-status[data-scope="group:canary"]');
  const canary = await apiGet('/api/groups/canary/config');
  assertEq([canary.target_version, canary.target_version_jitter], [version, '30m'], 'group canary targets the release');
  await page.waitForFunction(() => [...document.querySelectorAll('#rollout-targets tbody tr')]
    .some((r) => r.children[0].textContent.trim() === 'Group canary'));
  assertEq(await rowOf(page, '#rollout-targets', 'Group canary'), ['Group canary', version, 'published', '30m'],
    'the targets list the group');
  // Global asks first and keeps the rest of the scope.
  const before = await apiGet('/api/config');
  await page.selectOption('#rollout-set select[name=scope]', 'global');
  await page.fill('#rollout-set input[name=jitter]', '');
  page.once('dialog', (d) => d.accept());
  await page.click('#rollout-set button:text-is("Roll out")');
  await page.waitForSelector('#rollout-status[data-scope=global]');
  const global = await apiGet('/api/config');
  assertEq(byKey(global), byKey({ ...before, target_version: version }), 'global targets the release, the rest kept');
  await page.waitForFunction((v) => {
    const r = [...document.querySelectorAll('#rollout-releases tbody tr')].find((x) => x.children[0].textContent.trim() === v);
    return r && r.children[4].textContent.trim() === 'global, group:canary';
  }, version);
  // Deleting a targeted release is refused (409), naming the scopes.
  page.once('dialog', (d) => d.accept());
  await page.click(`#rollout-releases button[aria-label="Delete ${version}"]`);
  await page.waitForSelector('#rollout-release-status.error-text');
  const conflict = await page.textContent('#rollout-release-status');
  assert(conflict.includes("'global'") && conflict.includes('group:canary'), `the 409 names the scopes: ${conflict}`);
  assertEq((await apiGet('/api/agents/releases')).length, 1, 'the release is kept');
  await page.screenshot({ path: join(SHOTS, 'rollout.png'), fullPage: true });
  // Once no scope targets it, it goes.
  assertEq((await apiCall('PUT', '/api/config', { body: before })).status, 200, 'global target cleared');
  assertEq((await apiCall('DELETE', '/api/groups/canary/config')).status, 204, 'canary scope cleared');
  page.once('dialog', (d) => d.accept());
  await page.click(`#rollout-releases button[aria-label="Delete ${version}"]`);
  await page.waitForSelector('#rollout-release-status.hint:has-text("Deleted")');
  await page.waitForSelector('#rollout-releases [data-state=empty]');
  assertEq(await apiGet('/api/agents/releases'), [], 'deleted in the API');
  assertEq(errors, [], 'console errors');
  await context.close();
});

check('packages: an upload with its progress bar, the download byte for byte, a refused name, delete', async () => {
  const { page, context, errors } = await open('/packages', { allow: [/status of 400/] });
  await page.waitForSelector('#packages [data-state=empty]');
  await page.waitForSelector('#scripts [data-state=empty]');
  assertEq(await page.getAttribute('a[data-nav=packages]', 'aria-current'), 'page', 'nav marks Packages');
  // A few MB: the bar is driven by the upload's progress events.
  const data = Buffer.alloc(3 * 1024 * 1024 + 123);
  for (let i = 0; i < data.length; i += 1) data[i] = i % 251;
  await page.fill('#packages-upload input[name=name]', 'webex');
  await page.fill('#packages-upload input[name=version]', '2025.03');
  await page.setInputFiles('#packages-upload input[type=file]',
    { name: 'webex.msi', mimeType: 'application/octet-stream', buffer: data });
  await page.evaluate(() => {
    window.__progress = [];
    const bar = document.querySelector('#packages-upload progress');
    new MutationObserver(() => {
      if (bar.value > 0) window.__progress.push(bar.value);
    }).observe(bar, { attributes: true });
  });
  await page.click('#packages-upload button:text-is("Upload")');
  await page.waitForSelector('#packages-upload-status[data-done="webex/2025.03"]');
  const [value, max] = await page.$eval('#packages-upload progress', (p) => [p.value, p.max]);
  assert(max >= data.length, `the bar counts the whole body: ${max} for ${data.length} bytes`);
  assertEq(value, max, 'the progress bar reached 100 %');
  assert((await page.textContent('#packages-upload .progress')).startsWith('100 %'), 'and says 100 %');
  assert((await page.evaluate(() => window.__progress.length)) > 0, 'progress was reported');
  const listed = await apiGet('/api/app-packages');
  assertEq(listed.map((o) => [o.name, o.version, o.size]), [['webex', '2025.03', data.length]], 'the API lists the upload');
  await page.waitForSelector('#packages tbody tr');
  const row = await rowOf(page, '#packages', 'webex');
  assertEq([row[1], row[3], row[5]], ['2025.03', listed[0].digest, 'Download'], 'version, digest, download link');
  // The download is the upload, byte for byte, under the backend's file name.
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.click('#packages a[aria-label="Download webex 2025.03"]'),
  ]);
  assertEq(download.suggestedFilename(), 'webex-2025.03', 'file name');
  const saved = join(SHOTS, '..', download.suggestedFilename());
  await download.saveAs(saved);
  assert(readFileSync(saved).equals(data), 'the download equals the upload');
  await page.waitForSelector('#packages-status:has-text("Saved webex-2025.03")');
  // A script object; a name the backend refuses (400) is shown in place.
  const script = Buffer.from('Get-CimInstance Win32_OperatingSystem\n');
  await page.fill('#scripts-upload input[name=name]', 'café');
  await page.fill('#scripts-upload input[name=version]', '3');
  await page.setInputFiles('#scripts-upload input[type=file]', { name: 'inv-os.ps1', mimeType: 'text/plain', buffer: script });
  await page.click('#scripts-upload button:text-is("Upload")');
  await page.waitForSelector('#scripts-upload-status.error-text');
  const refused = await page.textContent('#scripts-upload-status');
  assert(refused.includes('name'), `the 400 names the field: ${refused}`);
  await page.fill('#scripts-upload input[name=name]', 'inv-os');
  await page.click('#scripts-upload button:text-is("Upload")');
  await page.waitForSelector('#scripts-upload-status[data-done="inv-os/3"]');
  await page.waitForSelector('#scripts tbody tr');
  assertEq((await apiGet('/api/script-objects')).map((o) => [o.name, o.version, o.size]), [['inv-os', '3', script.length]],
    'the API lists the script object');
  await page.screenshot({ path: join(SHOTS, 'packages.png'), fullPage: true });
  // Delete asks first.
  page.once('dialog', (d) => d.accept());
  await page.click('#scripts button[aria-label="Delete inv-os 3"]');
  await page.waitForSelector('#scripts [data-state=empty]');
  assertEq(await apiGet('/api/script-objects'), [], 'deleted in the API');
  assertEq(errors, [], 'console errors');
  await context.close();
});

check('compliance: counts per check and status, OK rows on a toggle, a check filter in the URL surviving reload', async () => {
  const { page, context, errors } = await open('/compliance');
  await page.waitForSelector('#compliance-counts tbody tr');
  assertEq(await page.getAttribute('a[data-nav=compliance]', 'aria-current'), 'page', 'nav marks Compliance');
  const api = await apiGet('/api/checks');
  assertEq(api.counts, [
    { check_name: 'bitlocker', ok: 2, warn: 1, fail: 1, unknown: 0 },
    { check_name: 'disk-space', ok: 1, warn: 0, fail: 1, unknown: 0 },
  ], 'the seeded check states');
  assertEq(await rowOf(page, '#compliance-counts', 'bitlocker'), ['bitlocker', '1', '1', '0', '2', '4'],
    'fail, warn, unknown, ok and PCs of a check');
  assertEq(await page.textContent('#compliance-totals'), '2 fail · 1 warn · 0 unknown · 3 ok across 2 check(s)', 'totals');
  await page.waitForSelector('#compliance-rows tbody tr');
  assertEq(await tableColumn(page, '#compliance-rows', 0), api.rows.map((r) => r.pc_id), 'rows without OK, in the API order');
  assertEq(await tableColumn(page, '#compliance-rows', 2), api.rows.map((r) => r.status), 'their states');
  assertEq([...api.rows.map((r) => r.status)].sort(), ['fail', 'fail', 'warn'], 'the seeded states that are not OK');
  await page.getByText('3 OK row(s) not shown.').waitFor();
  await page.screenshot({ path: join(SHOTS, 'compliance.png'), fullPage: true });
  // Include OK rows: a toggle kept in the URL.
  await page.check('input[name=include_ok]');
  await page.waitForURL((u) => u.searchParams.get('include_ok') === '1');
  await page.waitForFunction(() => document.querySelectorAll('#compliance-rows tbody tr').length === 6);
  // One check, by name.
  await page.fill('input[name=check]', 'disk-space');
  await page.click('form[aria-label="Filter checks"] button:text-is("Apply")');
  await page.waitForURL((u) => u.searchParams.get('check') === 'disk-space');
  await page.waitForFunction(() => document.querySelectorAll('#compliance-rows tbody tr').length === 2);
  await page.reload();
  await page.waitForSelector('#compliance-rows tbody tr');
  assertEq(await page.inputValue('input[name=check]'), 'disk-space', 'the filter survives reload');
  assert(await page.isChecked('input[name=include_ok]'), 'the toggle survives reload');
  assertEq(await tableColumn(page, '#compliance-rows', 0), ['SIM-00004', 'SIM-00005'], 'both PCs of the check');
  assertEq(await tableColumn(page, '#compliance-counts', 0), ['disk-space'], 'the counts of that check');
  assertEq(errors, [], 'console errors');
  await context.close();
});

check('inventory: the fleet list with summary columns, a PC\'s facts and its history timeline', async () => {
  const { page, context, errors } = await open('/inventory');
  await page.waitForSelector('[data-job="inventory-sw"] tbody tr');
  assertEq(await page.getAttribute('a[data-nav=inventory]', 'aria-current'), 'page', 'nav marks Inventory');
  const byJob = await apiGet('/api/inventory/by-job/inventory-sw');
  assertEq(byJob.total, 2, 'two PCs reported');
  assertEq(await tableColumn(page, '[data-job="inventory-sw"]', 0), byJob.rows.map((r) => r.pc_id), 'PCs in the API order');
  assertEq(await tableColumn(page, '[data-job="inventory-sw"]', 1), ['Windows 11', 'Windows 11'], 'the OS summary column');
  assertEq(await tableColumn(page, '[data-job="inventory-sw"]', 2), ['16.0 GiB', '32.0 GiB'], 'RAM shown as bytes');
  await page.screenshot({ path: join(SHOTS, 'inventory.png'), fullPage: true });
  // One PC: its facts, the apps as a nested table, then its history.
  await page.click('[data-job="inventory-sw"] a:text-is("SIM-00000")');
  await page.waitForURL((u) => u.searchParams.get('pc') === 'SIM-00000');
  await page.waitForSelector('section[data-job="inventory-sw"] table');
  const apps = await page.$$eval('section[data-job="inventory-sw"] table table tbody tr', (rows) => rows.map((r) => r.children[0].textContent.trim()));
  assertEq(apps, ['Google Chrome', 'Mozilla Firefox', 'VLC'], 'the nested apps table');
  await page.click('section[data-job="inventory-sw"] button:text-is("History")');
  await page.waitForURL((u) => u.searchParams.get('history') === 'inventory-sw');
  await page.waitForSelector('.timeline .event');
  const api = await apiGet('/api/inventory/inventory-sw/history/pc/SIM-00000');
  assertEq(await page.$$eval('.timeline .event', (els) => els.length), api.length, 'every event of the week');
  assertEq(api.length, 8, 'four first-scan events and four of the rescan');
  const kinds = await page.$$eval('.timeline .event', (els) => els.map((e) => e.dataset.kind).sort());
  assertEq(kinds, ['added', 'added', 'added', 'added', 'added', 'changed', 'changed', 'removed'], 'kinds of the events');
  const removed = await page.textContent('.timeline .event[data-kind=removed]');
  assert(removed.includes('Zoom'), `the removed app is named: ${removed}`);
  await page.screenshot({ path: join(SHOTS, 'inventory-history.png'), fullPage: true });
  // The kind filter and a reload keep the view.
  await page.click('button:text-is("removed")');
  await page.waitForFunction(() => document.querySelectorAll('.timeline .event').length === 1);
  await page.reload();
  await page.waitForSelector('.timeline .event');
  assertEq(await page.$$eval('.timeline .event', (els) => els.length), 1, 'the kind filter survives reload');
  assertEq(errors, [], 'console errors');
  await context.close();
});

check('software search: filters across the fleet, paging state in the URL, CSV download', async () => {
  const { page, context, errors } = await open('/inventory/search');
  await page.waitForSelector('#search-results tbody tr');
  assertEq(await page.getAttribute('a[data-nav=inventory]', 'aria-current'), 'page', 'nav marks Inventory');
  assertEq((await tableColumn(page, '#search-results', 2)), ['Google Chrome', 'Mozilla Firefox', 'VLC', 'Google Chrome', 'Slack'],
    'every app of every PC, by PC then name');
  await page.click('button:text-is("+ add filter")');
  await page.fill('input[aria-label="Value of filter 1"]', 'chrome');
  await page.selectOption('select[aria-label="Operator of filter 1"]', 'contains');
  await page.waitForFunction(() => document.querySelectorAll('#search-results tbody tr').length === 2);
  assertEq(await tableColumn(page, '#search-results', 0), ['SIM-00000', 'SIM-00001'], 'the PCs with Chrome');
  await page.click('button:text-is("+ add filter")');
  await page.selectOption('select[aria-label="Column of filter 2"]', 'size_mb');
  await page.selectOption('select[aria-label="Operator of filter 2"]', 'gt');
  await page.fill('input[aria-label="Value of filter 2"]', '405');
  await page.waitForFunction(() => document.querySelectorAll('#search-results tbody tr').length === 1);
  assertEq(await tableColumn(page, '#search-results', 0), ['SIM-00001'], 'Chrome over 405 MB, compared as a number');
  await page.screenshot({ path: join(SHOTS, 'inventory-search.png'), fullPage: true });
  await page.reload();
  await page.waitForFunction(() => document.querySelectorAll('#search-results tbody tr').length === 1);
  assertEq(await page.inputValue('input[aria-label="Value of filter 2"]'), '405', 'filters survive reload');
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.click('button:text-is("Download CSV")'),
  ]);
  assertEq(download.suggestedFilename(), 'inventory_sw_apps.csv', 'named after the explode table');
  const saved = join(SHOTS, '..', download.suggestedFilename());
  await download.saveAs(saved);
  const { readFileSync } = await import('node:fs');
  const lines = readFileSync(saved, 'utf8').trim().split(/\r?\n/);
  assertEq(lines.length, 2, 'a header and the one matching row');
  assertEq(lines[0], 'pc_id,collected_at,name,version,size_mb', 'the CSV header');
  assert(lines[1].startsWith('SIM-00001,') && lines[1].endsWith(',Google Chrome,121.0,410'), `the row: ${lines[1]}`);
  assertEq(errors, [], 'console errors');
  await context.close();
});

check('notifications: the sent list, who acknowledged one, a refused send, a send to a PC', async () => {
  const { page, context, errors } = await open('/notifications', { allow: [/status of 400/] });
  const seeded = FIX.notification;
  await page.waitForSelector('#notifications-table tbody tr');
  assertEq(await page.getAttribute('a[data-nav=notifications]', 'aria-current'), 'page', 'nav marks Notifications');
  const row = await rowOf(page, '#notifications-table', 'Maintenance tonight');
  assert(row, 'the page lists the seeded notification');
  assertEq([row[1], row[2], row[6]], ['warn', 'required', seeded.id], 'priority, ack, id');
  await page.click('#notifications-table a:text-is("Maintenance tonight")');
  await page.waitForURL((u) => u.searchParams.get('id') === seeded.id);
  await page.waitForSelector('#notification-acks tbody tr');
  assertEq((await rowOf(page, '#notification-acks', seeded.ack_pc)).slice(0, 2), [seeded.ack_pc, seeded.ack_sid],
    'who acknowledged it');
  await page.screenshot({ path: join(SHOTS, 'notifications.png'), fullPage: true });
  // No target: the backend's 400 is shown in place.
  await page.fill('#notification-send input[name=title]', 'Disk cleanup');
  await page.click('#notification-send button:text-is("Send")');
  await page.waitForSelector('#notification-send-status.error-text');
  const refused = await page.textContent('#notification-send-status');
  assert(refused.includes('target'), `the 400 names the target: ${refused}`);
  // To one PC.
  await page.fill('#notification-send input[name=pcs]', FIX.agent_pc);
  await page.selectOption('#notification-send select[name=priority]', 'info');
  await page.fill('#notification-send textarea[name=body]', 'Temporary files are removed tonight.');
  await page.click('#notification-send button:text-is("Send")');
  await page.waitForSelector('#notification-send-status[data-id]');
  const id = await page.getAttribute('#notification-send-status', 'data-id');
  const said = await page.textContent('#notification-send-status');
  assert(said.includes(`notifications.pc.${FIX.agent_pc}`), `the answer names the subject: ${said}`);
  const listed = await apiGet('/api/notifications');
  assertEq([listed[0].id, listed[0].title, listed[0].priority, listed[0].require_ack], [id, 'Disk cleanup', 'info', false],
    'newest first in the API');
  await page.waitForSelector(`#notifications-table a[href="/notifications?id=${id}"]`);
  await page.click('#notification-send-status a');
  await page.waitForURL((u) => u.searchParams.get('id') === id);
  await page.getByText('No acknowledgement yet.').waitFor();
  await page.getByText('This notification does not ask for an acknowledgement.').waitFor();
  assertEq(errors, [], 'console errors');
  await context.close();
});

check('agent actions: ping, the log tail and a command answered by the agent; a silent PC is a 504 in place', async () => {
  const pc = FIX.agent_pc;
  const { page, context, errors } = await open(`/agents/${pc}`, { allow: [/status of 504/] });
  await page.click('#agent-ping button:text-is("Ping")');
  await page.waitForSelector('#agent-ping-status[data-answered]');
  assertEq(await page.getAttribute('#agent-ping-status', 'data-answered'), '0.43.56', "the agent's version");
  assert((await page.textContent('#agent-ping-status')).includes('host-1'), 'and its hostname');
  await page.fill('#agent-logs input[name=tail]', '3');
  await page.click('#agent-logs button:text-is("Fetch")');
  await page.waitForSelector('#agent-logs pre');
  assertEq(await page.textContent('#agent-logs pre'), 'line 1\nline 2\nline 3\n', 'the last 3 lines of its log');
  await page.fill('#agent-run textarea[name=script]', 'hostname');
  await page.fill('#agent-run input[name=timeout_secs]', '10');
  await page.click('#agent-run button:text-is("Run")');
  await page.waitForSelector('#agent-run-result[data-exit-code]');
  assertEq(await page.getAttribute('#agent-run-result', 'data-exit-code'), '0', 'exit code');
  assertEq(await page.textContent('#agent-run-stdout'), 'ran: hostname', 'stdout');
  assertEq(await page.textContent('#agent-run-stderr'), '(empty)', 'stderr');
  await page.waitForSelector('#agent-run-result .badge.ok:text-is("success")');
  await page.screenshot({ path: join(SHOTS, 'agent-actions.png'), fullPage: true });
  // A PC nobody answers for: the 504s are shown where they were asked.
  const silent = FIX.pcs.find((p) => p !== pc && !FIX.investigated.includes(p));
  await page.goto(`${BASE}/agents/${silent}`);
  await page.click('#agent-ping button:text-is("Ping")');
  await page.waitForSelector('#agent-ping-status.error-text');
  const noPong = await page.textContent('#agent-ping-status');
  assert(noPong.includes(silent), `the 504 names the PC: ${noPong}`);
  await page.click('#agent-logs button:text-is("Fetch")');
  await page.waitForSelector('#agent-logs [data-state=error]');
  assert((await page.textContent('#agent-logs [data-state=error]')).includes(silent), 'the logs 504 names the PC');
  assertEq(errors, [], 'console errors');
  await context.close();
});

check('a viewer sees the new pages without their mutation controls', async () => {
  const account = { username: 'viewer-1', password: 'viewer-password-1', role: 'viewer' };
  const made = await apiCall('POST', '/api/accounts', { body: account });
  assertEq(made.status, 201, `viewer account: ${JSON.stringify(made.data)}`);
  const login = await fetch(`${BASE}/api/auth/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username: account.username, password: account.password }),
  });
  assertEq(login.status, 200, 'viewer login');
  const { token } = await login.json();
  // Something to list on each page, published with the service token.
  await apiUpload('/api/agents/publish', readFileSync(AGENT_EXE), 'kanade-agent.exe');
  await apiUpload('/api/app-packages/7zip/24.08', Buffer.from('7z installer'), '7z.msi');
  const { page, context, errors } = await open('/rollout', { token });
  await page.waitForSelector('#rollout-releases tbody tr');
  await page.waitForSelector('#rollout-targets tbody tr');
  await page.waitForSelector('#rollout-read-only');
  assertEq(await page.$$eval('#rollout-releases button', (b) => b.length), 0, 'no delete button');
  assertEq([await page.$('#rollout-publish'), await page.$('#rollout-set')], [null, null], 'no publish or rollout form');
  await page.getByText('viewer-1 · viewer').waitFor();
  await page.screenshot({ path: join(SHOTS, 'rollout-viewer.png'), fullPage: true });
  await page.goto(`${BASE}/packages`);
  await page.waitForSelector('#packages tbody tr');
  await page.waitForSelector('#packages-read-only');
  assertEq([await page.$('#packages-upload'), await page.$('#scripts-upload')], [null, null], 'no upload form');
  assertEq(await page.$$eval('#packages tbody button', (b) => b.length), 0, 'no delete button');
  await page.waitForSelector('#packages a[aria-label="Download 7zip 24.08"]');
  await page.goto(`${BASE}/notifications`);
  await page.waitForSelector('#notifications-table tbody tr');
  await page.waitForSelector('#notifications-read-only');
  assertEq(await page.$('#notification-send'), null, 'no send form');
  await page.goto(`${BASE}/agents/${FIX.agent_pc}`);
  await page.waitForSelector('#agent-logs button:text-is("Fetch")');
  assertEq([await page.$('#agent-ping'), await page.$('#agent-run')], [null, null], 'no ping or run');
  await page.goto(`${BASE}/compliance`);
  await page.waitForSelector('#compliance-counts tbody tr');
  // The backend refuses a viewer's mutation anyway.
  const refused = await apiCall('POST', '/api/agents/rollout',
    { token, body: { version: FIX.release_version, scope: { type: 'global' } } });
  assertEq(refused.status, 403, 'a viewer cannot roll out');
  assertEq(errors, [], 'console errors');
  await context.close();
});

check('unknown API paths stay JSON 404s; app routes fall back to the page', async () => {
  const api = await fetch(`${BASE}/api/nope`, { headers: { Authorization: `Bearer ${TOKEN}` } });
  assertEq(api.status, 404, '/api/nope status');
  assert((await api.json()).error, '/api/nope has a JSON error');
  const deep = await fetch(`${BASE}/agents/SIM-00001?range=7d`);
  assertEq(deep.status, 200, 'deep link status');
  assert((await deep.text()).includes('<main id="app"'), 'deep link serves the app');
  const missing = await fetch(`${BASE}/js/missing.js`);
  assertEq(missing.status, 404, 'missing asset');
});

let failed = 0;
for (const { name, fn } of checks) {
  const started = Date.now();
  try {
    await fn();
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL ${name}\n     ${e.stack || e}`);
    if (lastPage && !lastPage.isClosed()) {
      const shot = join(SHOTS, `FAILED-${checks.findIndex((c) => c.name === name)}.png`);
      await lastPage.screenshot({ path: shot, fullPage: true }).catch(() => {});
      console.log(`     page at failure: ${lastPage.url()} → ${shot}`);
      await lastPage.context().close().catch(() => {});
    }
  }
}
await browser.close();
console.log(`${checks.length - failed} passed, ${failed} failed; screenshots in ${SHOTS}`);
process.exit(failed ? 1 : 0);
