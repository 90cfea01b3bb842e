// One command for the whole reference integration: builds and starts the Connectors service
// (local profile, sandbox provider, SQLite under .data/) and the Core server in front of it.
//
//   npm start --prefix examples/core-integration      then open http://127.0.0.1:3000
//
// CONNECTORS_BIN uses an existing binary instead of `cargo build`; CONNECTORS_PORT (8080) and
// CORE_PORT (3000) move the two servers; CORE_CALLBACK_PATTERN=B has the provider send the
// browser to Core's own callback route instead of the service's (server.mjs).

import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { startCoreServer } from './server.mjs';
import { newOperatorToken, startConnectors } from './stack.mjs';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

// npm runs scripts in this directory; a relative CONNECTORS_BIN is relative to where npm ran.
let binary = process.env.CONNECTORS_BIN && resolve(process.env.INIT_CWD ?? process.cwd(), process.env.CONNECTORS_BIN);
if (!binary) {
  console.log('Building the connectors binary (cargo build --bin connectors)…');
  const build = spawnSync('cargo', ['build', '--quiet', '--bin', 'connectors'], { cwd: ROOT, stdio: 'inherit' });
  if (build.status !== 0) process.exit(build.status ?? 1);
  binary = `${ROOT}target/debug/connectors`;
}

const connectorsPort = Number.parseInt(process.env.CONNECTORS_PORT ?? '8080', 10);
const corePort = Number.parseInt(process.env.CORE_PORT ?? '3000', 10);
const coreUrl = `http://127.0.0.1:${corePort}`;
const dataDir = `${HERE}.data`;
mkdirSync(dataDir, { recursive: true });

// Core and the service share this operator token; a deployment keeps it in a secret store.
const token = newOperatorToken();
const connectors = await startConnectors({
  binary,
  dataDir,
  port: connectorsPort,
  token,
  coreUrls: [coreUrl],
  env: { POBLYSH_LOG_FORMAT: 'pretty' },
});
const core = await startCoreServer({
  connectorsUrl: connectors.url,
  token,
  port: corePort,
  publicUrl: coreUrl,
  callbackPattern: process.env.CORE_CALLBACK_PATTERN ?? 'A',
});

console.log(`\nConnectors service: ${connectors.url} (API reference at ${connectors.url}/docs)`);
console.log(`Core:               ${core.url}  <- open this, click Connect on Sandbox`);
console.log(`Callback pattern ${process.env.CORE_CALLBACK_PATTERN ?? 'A'}; events pushed to ${core.url}/hooks/connectors\n`);

async function shutdown() {
  await core.stop();
  await connectors.stop();
  process.exit(0);
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
