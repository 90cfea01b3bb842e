// The reference integration driven in headless Chromium, as a person would use it, once per
// callback pattern: open Core's page, click Connect on the Sandbox provider, come back from the
// provider (pattern A through the service's callback, pattern B through Core's own), see the
// connection, ask for a sync and see the new signal arrive by push: the page polls nothing, and
// the row is the one the push handler added. Then Core's receiver is checked to refuse a forged
// delivery and to drop a replay's duplicates. Leaves a screenshot per pattern for CI.
//
//   CONNECTORS_BIN=target/debug/connectors node examples/core-integration/e2e.mjs
//
// Environment:
//   CONNECTORS_BIN           the service binary (required)
//   CONNECTORS_DATABASE_URL  a database for the service (default: SQLite in a temporary directory)
//   CHROMIUM                 the browser (default /usr/bin/chromium, Debian's `chromium` package)
//   E2E_SCREENSHOT           where to save pattern A's screenshot (default
//                            target/e2e/core-integration.png); pattern B's goes beside it
// Needs `npm ci --prefix examples/core-integration` (standardwebhooks, playwright-core; it
// downloads no browser). Exits 0 when every step passed, 1 with the reason otherwise.

import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { startFakeSandbox } from './fake-sandbox.mjs';
import { freePort, newOperatorToken, startConnectors } from './stack.mjs';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SCREENSHOT = resolve(ROOT, process.env.E2E_SCREENSHOT ?? 'target/e2e/core-integration.png');
const STEP_TIMEOUT = 30_000;

function fail(message) {
  console.error(`e2e: ${message}`);
  process.exit(1);
}

const binary = process.env.CONNECTORS_BIN;
if (!binary || !existsSync(binary)) fail(`CONNECTORS_BIN must name the built service binary (got ${binary ?? 'nothing'})`);
if (!existsSync(CHROMIUM)) fail(`no browser at ${CHROMIUM}: install Debian's chromium package (apt-get install -y chromium) or set CHROMIUM`);
let chromium;
let startCoreServer;
try {
  ({ chromium } = await import('playwright-core'));
  ({ startCoreServer } = await import('./server.mjs')); // needs standardwebhooks
} catch (err) {
  fail(`a package is missing (${err.code ?? ''} ${err.message}): run npm ci --prefix examples/core-integration`);
}

const work = mkdtempSync(join(tmpdir(), 'core-integration-e2e-'));
const token = newOperatorToken();
// Two Core servers in front of one service, one per callback pattern.
const patterns = [
  { pattern: 'A', user: 'ada@acme.example', port: await freePort(), screenshot: SCREENSHOT },
  { pattern: 'B', user: 'grace@globex.example', port: await freePort(), screenshot: SCREENSHOT.replace(/(\.png)?$/, '-pattern-b.png') },
];
for (const p of patterns) p.url = `http://127.0.0.1:${p.port}`;
let sandbox;
let connectors;
let context;
let step = 'start the fake sandbox API';

let cleaned = false;
async function cleanup() {
  if (cleaned) return;
  cleaned = true;
  await context?.close().catch(() => {});
  for (const p of patterns) await p.core?.stop().catch(() => {});
  await connectors?.stop().catch(() => {});
  await sandbox?.close().catch(() => {});
  rmSync(work, { recursive: true, force: true });
}

// Never leave the service or the browser behind: not on a signal, not when a step hangs.
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, async () => {
    await cleanup();
    fail(`stopped by ${signal} while trying to ${step}`);
  });
}
setTimeout(async () => {
  await cleanup();
  fail(`timed out after 200 s while trying to ${step}`);
}, 200_000).unref();

/// Waits until `check()` resolves true, up to 20 s.
async function until(check, what) {
  const deadline = Date.now() + 20_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

try {
  sandbox = await startFakeSandbox();
  const started = new Date();

  step = 'start the connectors service';
  mkdirSync(join(work, 'data'));
  connectors = await startConnectors({
    binary,
    dataDir: join(work, 'data'),
    port: await freePort(),
    token,
    coreUrls: patterns.map((p) => p.url),
    databaseUrl: process.env.CONNECTORS_DATABASE_URL,
    env: { POBLYSH_SANDBOX_API_BASE_URL: sandbox.url },
    quiet: true,
  });

  for (const p of patterns) {
    step = `start the Core server of pattern ${p.pattern} and register its push endpoint`;
    p.core = await startCoreServer({
      connectorsUrl: connectors.url,
      token,
      port: p.port,
      publicUrl: p.url,
      callbackPattern: p.pattern,
    });
  }

  step = 'launch Chromium';
  context = await chromium.launchPersistentContext(join(work, 'chromium-profile'), {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1100, height: 900 },
  });
  context.setDefaultTimeout(STEP_TIMEOUT);
  const page = context.pages()[0] ?? (await context.newPage());
  const browserErrors = [];
  page.on('pageerror', (err) => browserErrors.push(err.message));
  const requests = []; // every request the page made: { path, at }
  page.on('request', (request) => requests.push({ url: new URL(request.url()), at: Date.now(), nav: request.isNavigationRequest() }));

  const results = [];
  for (const p of patterns) {
    const coreUrl = p.url;
    step = `pattern ${p.pattern}: open Core as ${p.user} and see the Sandbox provider`;
    sandbox.clear(); // the new connection's first sync finds nothing: the signal comes later
    await page.goto(coreUrl);
    if ((await page.locator('#switch-user').inputValue()) !== p.user) {
      await Promise.all([page.waitForEvent('load'), page.selectOption('#switch-user', p.user)]);
    }
    const sandboxCard = page.locator('.provider[data-provider="sandbox"]');
    await sandboxCard.waitFor();
    await page.locator('#connections .empty', { hasText: 'No connections yet.' }).waitFor();

    step = `pattern ${p.pattern}: click Connect and come back from the provider`;
    const clicked = Date.now();
    let connectionId = null;
    await Promise.all([
      page.waitForURL((url) => {
        if (url.origin !== coreUrl || url.searchParams.get('status') !== 'connected') return false;
        connectionId = url.searchParams.get('connection_id');
        return true;
      }),
      sandboxCard.getByRole('button', { name: 'Connect' }).click(),
    ]);
    if (!/^[0-9a-f-]{36}$/.test(connectionId ?? '')) throw new Error(`no connection_id came back (${page.url()})`);
    // Which callback the provider sent the browser to: the service's (A) or Core's (B).
    const hops = requests.filter((r) => r.at >= clicked && r.nav).map((r) => r.url);
    const viaService = hops.some((u) => u.origin === connectors.url && u.pathname === '/connect/sandbox/callback');
    const viaCore = hops.some((u) => u.origin === coreUrl && u.pathname === '/connectors/callback/sandbox');
    if (viaService !== (p.pattern === 'A') || viaCore !== (p.pattern === 'B')) {
      throw new Error(`pattern ${p.pattern} went through ${hops.map((u) => u.origin + u.pathname).join(' → ')}`);
    }

    step = `pattern ${p.pattern}: see the connection and the live stream`;
    await page.locator('#banner.ok', { hasText: 'Connected sandbox' }).waitFor();
    const row = page.locator(`#connections tr[data-connection-id="${connectionId}"]`);
    await row.waitFor();
    const status = await row.locator('td').nth(2).textContent();
    if (status !== 'active') throw new Error(`the connection is ${status}, not active`);
    await page.locator('#live[data-state="open"]').waitFor();
    await page.locator('#signals .empty', { hasText: 'No signals yet.' }).waitFor();

    step = `pattern ${p.pattern}: sync now and see the new signal arrive by push`;
    const quiet = Date.now(); // from here on the page must read no signals and watch no jobs
    const title = `Pushed to ${p.user} through pattern ${p.pattern}`;
    sandbox.add(title);
    await row.getByRole('button', { name: 'Sync now' }).click();
    const pushed = page.locator('#signals tr.signal', { hasText: title });
    await pushed.waitFor();
    const via = await pushed.getAttribute('data-via');
    if (via !== 'push') throw new Error(`the signal was shown by ${via}, not by push`);
    if ((await pushed.getAttribute('data-connection-id')) !== connectionId) {
      throw new Error('the pushed signal is not the new connection\'s');
    }
    const kind = await pushed.locator('td').nth(2).textContent();
    if (kind !== 'sandbox_event_created') throw new Error(`the pushed signal's kind is ${kind}`);
    const received = Number(await page.locator('#live').getAttribute('data-received'));
    if (!(received >= 1)) throw new Error(`the page counted ${received} pushed events`);
    // Every row is this tenant's: another organisation's signals reach neither list nor stream.
    const foreign = await page.locator(`#signals tr.signal:not([data-connection-id="${connectionId}"])`).count();
    if (foreign) throw new Error(`${foreign} signal(s) of another connection are shown`);

    step = `pattern ${p.pattern}: see "Last synced" move once the pushed signal came in`;
    await page.waitForFunction(
      (id) => document.querySelector(`#connections tr[data-connection-id="${id}"] td:nth-child(4)`)?.textContent !== 'never',
      connectionId,
    );

    step = `pattern ${p.pattern}: check the page polled nothing since the connection existed`;
    const polled = requests.filter((r) => r.at >= quiet && /^\/api\/connectors\/(signals|jobs)/.test(r.url.pathname));
    if (polled.length) throw new Error(`the page polled: ${polled.map((r) => r.url.pathname).join(', ')}`);

    step = `pattern ${p.pattern}: save the screenshot`;
    mkdirSync(dirname(p.screenshot), { recursive: true });
    await page.screenshot({ path: p.screenshot, fullPage: true });
    results.push(`pattern ${p.pattern}: connection ${connectionId} active, signal pushed (${received} event(s) on the stream)`);
  }
  if (browserErrors.length) throw new Error(`the page raised errors: ${browserErrors.join('; ')}`);

  step = 'pattern B: see a provider redirect refused in a browser that did not start its connect';
  // A connect started in one browser; its provider redirect opened in another browser, which has
  // a connect of its own pending and brings a `binding` in the address: Core ignores the
  // address's, forwards its own session's, and the service refuses the mismatch. (Without any
  // binding, the local profile lets a callback through; every other profile refuses it too.)
  const coreB = patterns[1].url;
  const startConnect = async () => {
    const response = await fetch(`${coreB}/api/connectors/authorize`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Cookie: 'core_session=grace%40globex.example' },
      body: JSON.stringify({ provider: 'sandbox' }),
    });
    const cookie = response.headers.getSetCookie().find((c) => c.startsWith('core_connect='))?.split(';')[0];
    return { cookie, providerPage: (await response.json()).authorize_url };
  };
  const first = await startConnect();
  const other = await startConnect();
  if (!first.cookie || !other.cookie) throw new Error('Core set no core_connect cookie when starting a connect');
  const toCore = (await fetch(first.providerPage, { redirect: 'manual' })).headers.get('location') ?? '';
  if (!toCore.startsWith(`${coreB}/connectors/callback/sandbox?`)) throw new Error(`the provider sent the browser to ${toCore}`);
  const elsewhere = await fetch(`${toCore}&binding=forged`, { redirect: 'manual', headers: { Cookie: other.cookie } });
  const outcome = new URL(elsewhere.headers.get('location') ?? '', coreB).searchParams;
  if (elsewhere.status !== 303 || outcome.get('status') !== 'error' || outcome.get('code') !== 'OAUTH_STATE_INVALID') {
    throw new Error(`the other browser was answered ${elsewhere.status} to ${elsewhere.headers.get('location')}`);
  }

  step = 'have Core refuse a forged delivery';
  const core = patterns[0].core;
  const forged = await fetch(`${patterns[0].url}/hooks/connectors`, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/json',
      'webhook-id': 'msg_forged',
      'webhook-timestamp': String(Math.floor(Date.now() / 1000)),
      'webhook-signature': `v1,${Buffer.alloc(32).toString('base64')}`,
    },
    body: JSON.stringify({ type: 'signal.created', timestamp: new Date().toISOString(), data: {} }),
  });
  if (forged.status !== 400) throw new Error(`a forged delivery was answered ${forged.status}`);
  if (core.push.stats.rejected !== 1) throw new Error(`Core counted ${core.push.stats.rejected} rejected deliveries`);

  step = 'replay every event and see Core drop the duplicates';
  const endpoint = `${connectors.url}/endpoints/${core.push.endpointId}`;
  const operator = { Authorization: `Bearer ${token}` };
  // Every first delivery made (backlog 0), so each replayed one is a duplicate.
  await until(async () => (await (await fetch(endpoint, { headers: operator })).json()).backlog === 0, 'no delivery is pending');
  const { received, duplicates } = core.push.stats;
  const replay = await fetch(`${endpoint}/replay`, {
    method: 'POST',
    headers: { ...operator, 'Content-Type': 'application/json' },
    body: JSON.stringify({ since: started.toISOString() }),
  });
  const { replayed } = await replay.json();
  if (replay.status !== 202 || !(replayed >= 2)) throw new Error(`the replay answered ${replay.status} (${replayed})`);
  await until(() => core.push.stats.duplicates - duplicates >= replayed, `Core saw the ${replayed} replayed deliveries`);
  if (core.push.stats.received !== received) throw new Error('a replayed delivery was handled twice');

  console.log(`e2e: passed: ${results.join('; ')}; a provider redirect opened in another browser refused; a forged delivery refused; ${replayed} replayed deliveries dropped as duplicates; screenshots ${patterns.map((p) => p.screenshot).join(', ')}`);
  await cleanup();
  process.exit(0);
} catch (err) {
  let shot = '';
  try {
    const page = context?.pages()[0];
    if (page) {
      mkdirSync(dirname(SCREENSHOT), { recursive: true });
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
      shot = ` (screenshot of the failure: ${SCREENSHOT}; page at ${page.url()})`;
    }
  } catch {
    // no page to show
  }
  const log = connectors?.log().split('\n').slice(-40).join('\n') ?? '';
  await cleanup();
  fail(`failed to ${step}: ${err.message}${shot}\n--- last lines of the service's log ---\n${log}`);
}
