// The reference Core integration: a small HTTP server that plays Poblysh Core in front of the
// Connectors service. It holds the operator token, knows which tenant the signed-in user belongs
// to, and offers the frontend (index.html) a narrow API of its own:
//
//   GET    /api/me                                   who is signed in (never the tenant id)
//   POST   /api/session         {"user": "..."}      sign in as another demo user
//   GET    /api/connectors/providers                 GET    /providers
//   POST   /api/connectors/authorize {"provider"}    POST   /connect/{provider} (return_to = this server)
//   GET    /api/connectors/connections               GET    /connections
//   POST   /api/connectors/connections/{id}/sync     POST   /connections/{id}/sync
//   DELETE /api/connectors/connections/{id}          DELETE /connections/{id}
//   GET    /api/connectors/signals?cursor&kind&connection_id   GET /signals
//   GET    /api/connectors/jobs/{id}                 GET    /jobs/{id}
//
// Every call to the service carries `Authorization: Bearer <operator token>` and the
// `X-Tenant-Id` that Core derives from the session; the browser never sees either.
//
// Run: CONNECTORS_URL=http://127.0.0.1:8080 CONNECTORS_OPERATOR_TOKEN=... node server.mjs
// (or `npm start`, which starts the service and this server together: see dev.mjs).
// No dependencies beyond Node.js 20.

import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';

const HERE = fileURLToPath(new URL('.', import.meta.url));

// Core's users and organisations. A real Core has these in its database.
export const USERS = {
  'ada@acme.example': { name: 'Ada Lovelace', org: 'acme' },
  'grace@globex.example': { name: 'Grace Hopper', org: 'globex' },
};
export const ORGS = {
  acme: { name: 'Acme Corp' },
  globex: { name: 'Globex' },
};

// The tenant mapping table Core owns: organisation → the `X-Tenant-Id` used with Connectors.
// A Core whose organisations already have UUIDs would send those UUIDs instead (strategy 1 in
// the guide); this table is strategy 2. The frontend never chooses or sends a tenant id.
export const TENANT_OF_ORG = {
  acme: '6b1f0a52-1d2e-4c61-9d0a-2d9a1c3f5e11',
  globex: '0e9c7d3a-58b4-4f7e-a2c1-93d4b5e6f708',
};

const DEFAULT_USER = 'ada@acme.example';
const SESSION_COOKIE = 'core_session';

/// A Core server talking to the Connectors service at `connectorsUrl` with `token`.
export function createCoreServer({ connectorsUrl, token, publicUrl }) {
  if (!connectorsUrl || !token) {
    throw new Error('createCoreServer needs connectorsUrl and token');
  }
  const base = connectorsUrl.replace(/\/+$/, '');

  // guide:core-client:begin
  // One call to the service for `tenant`; 429 and 503 are retried after their Retry-After.
  async function connectors(method, path, { tenant, body } = {}) {
    const headers = { Authorization: `Bearer ${token}`, Accept: 'application/json' };
    if (tenant) headers['X-Tenant-Id'] = tenant;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const init = { method, headers, redirect: 'manual', body: body && JSON.stringify(body) };
    for (let attempt = 1; ; attempt += 1) {
      const response = await fetch(`${base}${path}`, init);
      const retryAfter = response.headers.get('retry-after');
      if ((response.status === 429 || response.status === 503) && attempt < 3) {
        await response.body?.cancel();
        const seconds = Math.min(Number.parseInt(retryAfter ?? '', 10) || 1, 30);
        await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
        continue;
      }
      const text = await response.text();
      const json = text.startsWith('{') ? JSON.parse(text) : null;
      return { status: response.status, json, retryAfter };
    }
  }
  // The service's problem as Core's own error, by `code`; a refused operator token is Core's
  // misconfiguration, not the user's: 502, detail hidden.
  function relayError(res, { status, json, retryAfter }) {
    const code = json?.code ?? 'UPSTREAM_ERROR';
    const hidden = code === 'UNAUTHORIZED' || !json?.detail;
    const error = { code, message: hidden ? 'the connectors service failed' : json.detail, trace_id: json?.trace_id };
    send(res, code === 'UNAUTHORIZED' ? 502 : status, { error }, retryAfter ? { 'Retry-After': retryAfter } : {});
  }
  // guide:core-client:end

  function session(req) {
    const cookies = Object.fromEntries(
      (req.headers.cookie ?? '')
        .split(';')
        .map((c) => c.trim().split('='))
        .filter(([k, v]) => k && v)
        .map(([k, v]) => [k, decodeURIComponent(v)]),
    );
    const email = USERS[cookies[SESSION_COOKIE]] ? cookies[SESSION_COOKIE] : DEFAULT_USER;
    const user = USERS[email];
    return { email, ...user, orgName: ORGS[user.org].name, tenant: TENANT_OF_ORG[user.org] };
  }

  function send(res, status, body, headers = {}) {
    res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  }

  async function readJson(req) {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const text = Buffer.concat(chunks).toString('utf8');
    return text ? JSON.parse(text) : {};
  }

  // Where the browser reaches Core: the base of `return_to`, which must be one of the service's
  // POBLYSH_ALLOWED_RETURN_URLS.
  function selfUrl(req) {
    const url = typeof publicUrl === 'function' ? publicUrl() : publicUrl;
    return (url ?? `http://${req.headers.host}`).replace(/\/+$/, '');
  }

  const routes = [
    ['GET', /^\/$/, async (req, res) => {
      const html = await readFile(`${HERE}index.html`);
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(html);
    }],
    ['GET', /^\/api\/me$/, async (req, res, me) => {
      send(res, 200, { email: me.email, name: me.name, organisation: me.orgName, users: Object.keys(USERS) });
    }],
    ['POST', /^\/api\/session$/, async (req, res) => {
      const { user } = await readJson(req);
      if (!USERS[user]) return send(res, 400, { error: { code: 'UNKNOWN_USER', message: 'no such user' } });
      send(res, 200, { email: user }, {
        'Set-Cookie': `${SESSION_COOKIE}=${encodeURIComponent(user)}; Path=/; HttpOnly; SameSite=Lax`,
      });
    }],
    ['GET', /^\/api\/connectors\/providers$/, async (req, res) => {
      const up = await connectors('GET', '/providers');
      if (up.status !== 200) return relayError(res, up);
      // The frontend needs only what it renders.
      const providers = up.json.providers.map((p) => ({
        slug: p.slug,
        name: p.display_name,
        configured: p.configured,
        kinds: p.kinds,
      }));
      send(res, 200, { providers });
    }],
    ['POST', /^\/api\/connectors\/authorize$/, async (req, res, me) => {
      const { provider } = await readJson(req);
      if (typeof provider !== 'string' || !/^[a-z0-9_]+$/.test(provider)) {
        return send(res, 400, { error: { code: 'VALIDATION_FAILED', message: 'provider must be a slug' } });
      }
      // The service sends the browser back here with status=connected&connection_id=... or
      // status=error&code=...; the page reads them.
      const returnTo = `${selfUrl(req)}/?connected=${encodeURIComponent(provider)}`;
      const up = await connectors('POST', `/connect/${provider}`, {
        tenant: me.tenant,
        body: { return_to: returnTo },
      });
      if (up.status !== 200) return relayError(res, up);
      send(res, 200, { authorize_url: up.json.authorize_url });
    }],
    ['GET', /^\/api\/connectors\/connections$/, async (req, res, me) => {
      const up = await connectors('GET', '/connections?limit=100', { tenant: me.tenant });
      if (up.status !== 200) return relayError(res, up);
      send(res, 200, { connections: up.json.connections.filter((c) => c.status !== 'revoked') });
    }],
    ['POST', /^\/api\/connectors\/connections\/([0-9a-f-]{36})\/sync$/, async (req, res, me, [id]) => {
      const up = await connectors('POST', `/connections/${id}/sync`, { tenant: me.tenant });
      if (up.status !== 202) return relayError(res, up);
      const job = up.json.job ?? up.json;
      send(res, 202, { job: { id: job.id, status: job.status } });
    }],
    ['DELETE', /^\/api\/connectors\/connections\/([0-9a-f-]{36})$/, async (req, res, me, [id]) => {
      const up = await connectors('DELETE', `/connections/${id}`, { tenant: me.tenant });
      if (up.status !== 200) return relayError(res, up);
      send(res, 200, { connection: { id: up.json.id, status: up.json.status } });
    }],
    ['GET', /^\/api\/connectors\/signals$/, async (req, res, me) => {
      const incoming = new URL(req.url, 'http://core.invalid').searchParams;
      const query = new URLSearchParams({ limit: '20' });
      // Only the filters the page offers are passed on; a cursor goes back with the same filters.
      for (const name of ['cursor', 'kind', 'connection_id']) {
        if (incoming.get(name)) query.set(name, incoming.get(name));
      }
      const up = await connectors('GET', `/signals?${query}`, { tenant: me.tenant });
      if (up.status !== 200) return relayError(res, up);
      send(res, 200, up.json);
    }],
    ['GET', /^\/api\/connectors\/jobs\/([0-9a-f-]{36})$/, async (req, res, me, [id]) => {
      const up = await connectors('GET', `/jobs/${id}`, { tenant: me.tenant });
      if (up.status !== 200) return relayError(res, up);
      const { status, error, finished_at: finishedAt } = up.json;
      send(res, 200, { job: { id, status, error, finished_at: finishedAt } });
    }],
  ];

  return createServer(async (req, res) => {
    const path = new URL(req.url, 'http://core.invalid').pathname;
    try {
      for (const [method, pattern, handle] of routes) {
        const match = pattern.exec(path);
        if (match && req.method === method) {
          return await handle(req, res, session(req), match.slice(1));
        }
      }
      send(res, 404, { error: { code: 'NOT_FOUND', message: 'no such route' } });
    } catch (err) {
      console.error(`core: ${req.method} ${path} failed:`, err);
      send(res, 502, { error: { code: 'UPSTREAM_UNREACHABLE', message: 'the connectors service is unreachable' } });
    }
  });
}

/// Starts a Core server and resolves with its URL once it listens.
export async function startCoreServer({ connectorsUrl, token, host = '127.0.0.1', port = 0, publicUrl }) {
  let url = publicUrl;
  const server = createCoreServer({ connectorsUrl, token, publicUrl: () => url });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  url ??= `http://${host}:${server.address().port}`;
  return { server, url };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const connectorsUrl = process.env.CONNECTORS_URL ?? 'http://127.0.0.1:8080';
  const token = process.env.CONNECTORS_OPERATOR_TOKEN;
  if (!token) {
    console.error('set CONNECTORS_OPERATOR_TOKEN to an operator token of the service');
    process.exit(2);
  }
  const port = Number.parseInt(process.env.CORE_PORT ?? '3000', 10);
  const { url } = await startCoreServer({ connectorsUrl, token, port, publicUrl: process.env.CORE_PUBLIC_URL });
  console.log(`Core listening on ${url} (connectors at ${connectorsUrl})`);
}
