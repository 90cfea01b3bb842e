// The reference integration driven in headless Chromium, as a person would use it: open Core's
// page, click Connect on the Sandbox provider, come back from the provider, see the connection,
// ask for a sync, see signals. Leaves a screenshot for CI.
//
//   CONNECTORS_BIN=target/debug/connectors node examples/core-integration/e2e.mjs
//
// Environment:
//   CONNECTORS_BIN           the service binary (required)
//   CONNECTORS_DATABASE_URL  a database for the service (default: SQLite in a temporary directory)
//   CHROMIUM                 the browser (default /usr/bin/chromium, Debian's `chromium` package)
//   E2E_SCREENSHOT           where to save the screenshot (default target/e2e/core-integration.png)
// Needs `npm ci --prefix examples/core-integration` (playwright-core; it downloads no browser).
// Exits 0 when every step passed, 1 with the reason otherwise.

import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { startCoreServer } from './server.mjs';
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
try {
  ({ chromium } = await import('playwright-core'));
} catch (err) {
  fail(`playwright-core is not installed (${err.code ?? err.message}): run npm ci --prefix examples/core-integration`);
}

const work = mkdtempSync(join(tmpdir(), 'core-integration-e2e-'));
const token = newOperatorToken();
const corePort = await freePort();
const coreUrl = `http://127.0.0.1:${corePort}`;
let connectors;
let core;
let context;
let step = 'start the connectors service';

let cleaned = false;
async function cleanup() {
  if (cleaned) return;
  cleaned = true;
  await context?.close().catch(() => {});
  core?.server.close();
  await connectors?.stop().catch(() => {});
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
  fail(`timed out after 180 s while trying to ${step}`);
}, 180_000).unref();

try {
  mkdirSync(join(work, 'data'));
  connectors = await startConnectors({
    binary,
    dataDir: join(work, 'data'),
    port: await freePort(),
    token,
    coreUrl,
    databaseUrl: process.env.CONNECTORS_DATABASE_URL,
    quiet: true,
  });

  step = 'start the Core server';
  core = await startCoreServer({ connectorsUrl: connectors.url, token, port: corePort, publicUrl: coreUrl });

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

  step = 'open Core and see the Sandbox provider';
  await page.goto(coreUrl);
  const sandbox = page.locator('.provider[data-provider="sandbox"]');
  await sandbox.waitFor();
  const noConnections = page.locator('#connections .empty', { hasText: 'No connections yet.' });
  await noConnections.waitFor();

  step = 'click Connect and come back from the provider';
  // The service sends the browser back to Core's return_to with the outcome in the query (the
  // page then tidies its address bar).
  let connectionId = null;
  await Promise.all([
    page.waitForURL((url) => {
      if (url.origin !== coreUrl || url.searchParams.get('status') !== 'connected') return false;
      connectionId = url.searchParams.get('connection_id');
      return true;
    }),
    sandbox.getByRole('button', { name: 'Connect' }).click(),
  ]);
  if (!/^[0-9a-f-]{36}$/.test(connectionId ?? '')) throw new Error(`no connection_id came back (${page.url()})`);

  step = 'see the connection';
  await page.locator('#banner.ok', { hasText: 'Connected sandbox' }).waitFor();
  const row = page.locator(`#connections tr[data-connection-id="${connectionId}"]`);
  await row.waitFor();
  const status = await row.locator('td').nth(2).textContent();
  if (status !== 'active') throw new Error(`the connection is ${status}, not active`);

  step = 'sync now and see signals';
  await row.getByRole('button', { name: 'Sync now' }).click();
  await page.locator('#signals tr.signal').first().waitFor();
  const signals = await page.locator('#signals tr.signal').count();
  const kind = await page.locator('#signals tr.signal td').nth(2).textContent();
  if (!kind?.startsWith('sandbox_')) throw new Error(`the first signal's kind is ${kind}`);

  step = 'save the screenshot';
  mkdirSync(dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  if (browserErrors.length) throw new Error(`the page raised errors: ${browserErrors.join('; ')}`);

  console.log(`e2e: passed: connection ${connectionId} is active, ${signals} signal(s) shown; screenshot ${SCREENSHOT}`);
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
