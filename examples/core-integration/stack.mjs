// Starts the Connectors service binary for the reference integration (dev.mjs) and its browser
// test (e2e.mjs): local profile, sandbox provider on, Core's URLs allowed as `return_to` and
// `redirect_uri`, and pushes to Core over plain http on the loopback interface.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { resolve } from 'node:path';

/// A free TCP port on the loopback interface.
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/// A fresh operator token (the service wants at least 16 characters).
export function newOperatorToken() {
  return `core-${randomBytes(24).toString('hex')}`;
}

/// Starts `binary serve` and resolves once `/readyz` answers 200.
///
/// Each of `coreUrls` (one per Core server) is added to POBLYSH_ALLOWED_RETURN_URLS, so the
/// callback may send the browser back to it (pattern A), and its sandbox callback to
/// POBLYSH_ALLOWED_REDIRECT_URIS (pattern B). Variables named POBLYSH_* in this process's
/// environment are not passed on, so the service sees exactly this configuration (plus `env`).
export async function startConnectors({ binary, dataDir, port, token, coreUrls, databaseUrl, env = {}, quiet = false }) {
  const childEnv = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.startsWith('POBLYSH_')),
  );
  Object.assign(childEnv, {
    POBLYSH_PROFILE: 'local',
    POBLYSH_DATA_DIR: dataDir,
    POBLYSH_API_BIND_ADDR: `127.0.0.1:${port}`,
    POBLYSH_OPERATOR_TOKEN: token,
    POBLYSH_SANDBOX_ENABLED: 'true',
    POBLYSH_ALLOWED_RETURN_URLS: coreUrls.map((url) => `${url}/`).join(','),
    POBLYSH_ALLOWED_REDIRECT_URIS: coreUrls.map((url) => `${url}/connectors/callback/sandbox`).join(','),
    // Development only: Core listens on plain http at 127.0.0.1, which a deployed service
    // refuses to push to (https only, no loopback or private addresses). Never set these in
    // production.
    POBLYSH_PUSH_ALLOW_HTTP: 'true',
    POBLYSH_PUSH_ALLOWED_ADDRESSES: '127.0.0.1',
    POBLYSH_LOG_FORMAT: 'json',
    ...(databaseUrl ? { POBLYSH_DATABASE_URL: databaseUrl } : {}),
    ...env,
  });
  const child = spawn(resolve(binary), ['serve'], { cwd: dataDir, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const keep = (chunk) => {
    log += chunk;
    if (log.length > 200_000) log = log.slice(-100_000);
    if (!quiet) process.stderr.write(chunk);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let exited = null;
  child.on('exit', (code, signal) => {
    exited = { code, signal };
  });
  child.on('error', (err) => {
    exited = { error: err };
  });

  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exited) {
      throw new Error(`the connectors service (${binary}) exited before it was ready: ${JSON.stringify(exited)}\n${log}`);
    }
    try {
      const response = await fetch(`${url}/readyz`);
      if (response.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`the connectors service did not become ready within 60 s\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }

  return {
    url,
    log: () => log,
    async stop() {
      if (exited) return;
      const done = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await done;
      clearTimeout(timer);
    },
  };
}
