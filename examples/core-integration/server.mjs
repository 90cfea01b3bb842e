// The reference Core integration: a small HTTP server that plays Poblysh Core in front of the
// Connectors service. It holds the operator token, knows which tenant the signed-in user belongs
// to, and offers the frontend (index.html) a narrow API of its own:
//
//   GET    /api/me                                   who is signed in (never the tenant id)
//   POST   /api/session         {"user": "..."}      sign in as another demo user
//   GET    /api/connectors/providers                 GET    /providers
//   POST   /api/connectors/authorize {"provider"}    POST   /connect/{provider}
//   GET    /api/connectors/connections               GET    /connections
//   POST   /api/connectors/connections/{id}/sync     POST   /connections/{id}/sync
//   DELETE /api/connectors/connections/{id}          DELETE /connections/{id}
//   GET    /api/connectors/signals?cursor&kind&connection_id   GET /signals
//   GET    /api/connectors/jobs/{id}                 GET    /jobs/{id}
//   GET    /api/events                               the tenant's events, pushed (push.mjs)
//   POST   /hooks/connectors                         where the service delivers events (push.mjs)
//   GET    /connectors/callback/{provider}           the provider's redirect, in pattern B
//
// Every call to the service carries `Authorization: Bearer <operator token>` and the
// `X-Tenant-Id` that Core derives from the session; the browser never sees either.
//
// The OAuth callback follows one of the guide's two patterns (`callbackPattern`):
//   A  the provider redirects to the service, which sends the browser back to Core's
//      `return_to` with the outcome in the query. Nothing to register with the provider but
//      the service's callback URL.
//   B  the provider redirects to Core's /connectors/callback/{provider}; Core forwards `code`
//      and `state` to the service with the `binding` it kept in the user's session, and sends
//      the browser to the same page with the same query as in A.
//
// Run: CONNECTORS_URL=http://127.0.0.1:8080 CONNECTORS_OPERATOR_TOKEN=... CORE_PUBLIC_URL=...
// [CORE_CALLBACK_PATTERN=B] node server.mjs (or `npm start`, which starts the service and this
// server together: see dev.mjs). The service must reach CORE_PUBLIC_URL to push events.

import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';

import { createPush } from './push.mjs';

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
// A Core whose organisations already have UUIDs would send those UUIDs instead of keeping a
// table like this one. The frontend never chooses or sends a tenant id.
export const TENANT_OF_ORG = {
  acme: '6b1f0a52-1d2e-4c61-9d0a-2d9a1c3f5e11',
  globex: '0e9c7d3a-58b4-4f7e-a2c1-93d4b5e6f708',
};
const TENANTS = new Set(Object.values(TENANT_OF_ORG));

const DEFAULT_USER = 'ada@acme.example';
const SESSION_COOKIE = 'core_session';
// Pattern B: which browser started which connect. A real Core keeps this in its session store.
const CONNECT_COOKIE = 'core_connect';
const CONNECT_TTL_MS = 15 * 60 * 1000;

// guide:core-client:begin
/// A problem+json answer of the service, as an Error with its status, code and detail.
export class ConnectorsError extends Error {
  constructor(status, problem, retryAfter) {
    super(problem.detail ?? `the connectors service answered ${status}`);
    Object.assign(this, { status, code: problem.code ?? 'UPSTREAM_ERROR', details: problem.details });
    Object.assign(this, { traceId: problem.trace_id, retryAfter });
  }
}
/// Calls the service at `baseUrl` as Core: the operator token on every call, and `tenant`
/// (from Core's session, never from the browser) as `X-Tenant-Id`. Resolves with the JSON body.
export function connectorsClient(baseUrl, token) {
  return async function connectors(method, path, { tenant, body } = {}) {
    const headers = { Authorization: `Bearer ${token}`, Accept: 'application/json' };
    if (tenant) headers['X-Tenant-Id'] = tenant;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    for (let attempt = 1; ; attempt += 1) {
      const response = await fetch(`${baseUrl}${path}`, { method, headers, body: body && JSON.stringify(body) });
      const text = await response.text();
      const json = text && response.headers.get('content-type')?.includes('json') ? JSON.parse(text) : null;
      if (response.ok) return json;
      // 429 and 503 are tried again (3 attempts), never sooner than Retry-After asks.
      const retryAfter = response.headers.get('retry-after'); // seconds, or an HTTP date
      const wait = retryAfter === null ? 1000 : /^\d+$/.test(retryAfter) ? Number(retryAfter) * 1000
        : Math.max(0, Date.parse(retryAfter) - Date.now());
      if ([429, 503].includes(response.status) && attempt < 3 && wait <= 10_000) {
        await new Promise((resolve) => setTimeout(resolve, wait));
      } else throw new ConnectorsError(response.status, json ?? {}, retryAfter);
    }
  };
}
// guide:core-client:end

function cookiesOf(req) {
  return Object.fromEntries(
    (req.headers.cookie ?? '')
      .split(';')
      .map((c) => c.trim().split('='))
      .filter(([k, v]) => k && v)
      .map(([k, v]) => [k, decodeURIComponent(v)]),
  );
}

/// A Core server talking to the Connectors service at `connectorsUrl` with `token`, following
/// callback pattern `callbackPattern` ('A' or 'B'). `server.push` is its push receiver.
export function createCoreServer({ connectorsUrl, token, publicUrl, callbackPattern = 'A' }) {
  if (!connectorsUrl || !token) {
    throw new Error('createCoreServer needs connectorsUrl and token');
  }
  if (callbackPattern !== 'A' && callbackPattern !== 'B') {
    throw new Error(`callbackPattern is 'A' or 'B', not ${callbackPattern}`);
  }
  const connectors = connectorsClient(connectorsUrl.replace(/\/+$/, ''), token);
  const push = createPush(connectors);
  const pendingConnects = new Map(); // CONNECT_COOKIE value → { provider, binding, expires }

  function session(req) {
    const cookies = cookiesOf(req);
    const email = USERS[cookies[SESSION_COOKIE]] ? cookies[SESSION_COOKIE] : DEFAULT_USER;
    const user = USERS[email];
    return { email, ...user, orgName: ORGS[user.org].name, tenant: TENANT_OF_ORG[user.org] };
  }

  function send(res, status, body, headers = {}) {
    res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  }

  // A problem+json from the service, turned into Core's own error shape for the frontend.
  function relayError(res, err) {
    // An operator-token problem is Core's misconfiguration, not the user's: say so, hide detail.
    const status = err.code === 'UNAUTHORIZED' ? 502 : err.status;
    const headers = err.retryAfter ? { 'Retry-After': err.retryAfter } : {};
    send(res, status, { error: { code: err.code, message: err.message, trace_id: err.traceId } }, headers);
  }

  async function readJson(req) {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const text = Buffer.concat(chunks).toString('utf8');
    return text ? JSON.parse(text) : {};
  }

  // Where the browser and the service reach Core: the base of `return_to` (one of the
  // service's POBLYSH_ALLOWED_RETURN_URLS), of `redirect_uri` (POBLYSH_ALLOWED_REDIRECT_URIS)
  // and of the push endpoint.
  function selfUrl(req) {
    const url = typeof publicUrl === 'function' ? publicUrl() : publicUrl;
    return (url ?? `http://${req.headers.host}`).replace(/\/+$/, '');
  }

  // Pattern A's `return_to`, and where pattern B sends the browser: the page, which reads
  // status=connected&connection_id=... or status=error&code=... from the query.
  function backToPage(req, provider) {
    return `${selfUrl(req)}/?connected=${encodeURIComponent(provider)}`;
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
      const { providers } = await connectors('GET', '/providers');
      // The frontend needs only what it renders.
      send(res, 200, {
        providers: providers.map((p) => ({ slug: p.slug, name: p.display_name, configured: p.configured, kinds: p.kinds })),
      });
    }],
    ['POST', /^\/api\/connectors\/authorize$/, async (req, res, me) => {
      const { provider } = await readJson(req);
      if (typeof provider !== 'string' || !/^[a-z0-9_]+$/.test(provider)) {
        return send(res, 400, { error: { code: 'VALIDATION_FAILED', message: 'provider must be a slug' } });
      }
      if (callbackPattern === 'A') {
        const started = await connectors('POST', `/connect/${provider}`, {
          tenant: me.tenant,
          body: { return_to: backToPage(req, provider) },
        });
        return send(res, 200, { authorize_url: started.authorize_url });
      }
      // Pattern B: the provider comes back to Core. The binding ties the connect to this
      // browser: kept server-side under a fresh cookie, never shown to the page.
      const started = await connectors('POST', `/connect/${provider}`, {
        tenant: me.tenant,
        body: { redirect_uri: `${selfUrl(req)}/connectors/callback/${provider}` },
      });
      const key = randomBytes(24).toString('base64url');
      pendingConnects.set(key, { provider, binding: started.binding, expires: Date.now() + CONNECT_TTL_MS });
      for (const [k, pending] of pendingConnects) if (pending.expires < Date.now()) pendingConnects.delete(k);
      send(res, 200, { authorize_url: started.authorize_url }, {
        'Set-Cookie': `${CONNECT_COOKIE}=${key}; Path=/connectors/callback; HttpOnly; SameSite=Lax`,
      });
    }],
    ['GET', /^\/connectors\/callback\/([a-z0-9_]+)$/, async (req, res, me, [provider]) => {
      if (callbackPattern !== 'B') {
        return send(res, 404, { error: { code: 'NOT_FOUND', message: 'no such route' } });
      }
      // Everything the provider sent (code, state, error, error_description, and anything a
      // provider adds) goes on; a `binding` in the address is the browser's, never trusted.
      const query = new URL(req.url, 'http://core.invalid').searchParams;
      query.delete('binding');
      const key = cookiesOf(req)[CONNECT_COOKIE];
      const pending = key && pendingConnects.get(key);
      if (pending && pending.provider === provider && pending.expires >= Date.now()) {
        query.set('binding', pending.binding);
      }
      // Without it the service refuses the connect (OAUTH_STATE_INVALID, browser_mismatch).
      pendingConnects.delete(key);
      const outcome = new URLSearchParams();
      try {
        const { connection } = await connectors('GET', `/connect/${provider}/callback?${query}`);
        outcome.set('status', 'connected');
        outcome.set('connection_id', connection.id);
      } catch (err) {
        if (!(err instanceof ConnectorsError)) throw err;
        outcome.set('status', 'error');
        outcome.set('code', err.code);
      }
      res.writeHead(303, {
        Location: `${backToPage(req, provider)}&${outcome}`,
        'Set-Cookie': `${CONNECT_COOKIE}=; Path=/connectors/callback; HttpOnly; SameSite=Lax; Max-Age=0`,
      });
      res.end();
    }],
    ['GET', /^\/api\/connectors\/connections$/, async (req, res, me) => {
      const { connections } = await connectors('GET', '/connections?limit=100', { tenant: me.tenant });
      send(res, 200, { connections: connections.filter((c) => c.status !== 'revoked') });
    }],
    ['POST', /^\/api\/connectors\/connections\/([0-9a-f-]{36})\/sync$/, async (req, res, me, [id]) => {
      const queued = await connectors('POST', `/connections/${id}/sync`, { tenant: me.tenant });
      const job = queued.job ?? queued;
      send(res, 202, { job: { id: job.id, status: job.status } });
    }],
    ['DELETE', /^\/api\/connectors\/connections\/([0-9a-f-]{36})$/, async (req, res, me, [id]) => {
      const connection = await connectors('DELETE', `/connections/${id}`, { tenant: me.tenant });
      send(res, 200, { connection: { id: connection.id, status: connection.status } });
    }],
    ['GET', /^\/api\/connectors\/signals$/, async (req, res, me) => {
      const incoming = new URL(req.url, 'http://core.invalid').searchParams;
      const query = new URLSearchParams({ limit: '20' });
      // Only the filters the page offers are passed on; a cursor goes back with the same filters.
      for (const name of ['cursor', 'kind', 'connection_id']) {
        if (incoming.get(name)) query.set(name, incoming.get(name));
      }
      send(res, 200, await connectors('GET', `/signals?${query}`, { tenant: me.tenant }));
    }],
    ['GET', /^\/api\/connectors\/jobs\/([0-9a-f-]{36})$/, async (req, res, me, [id]) => {
      const { status, error, finished_at: finishedAt } = await connectors('GET', `/jobs/${id}`, { tenant: me.tenant });
      send(res, 200, { job: { id, status, error, finished_at: finishedAt } });
    }],
    ['GET', /^\/api\/events$/, async (req, res, me) => {
      push.stream(req, res, me.tenant);
    }],
    ['POST', /^\/hooks\/connectors$/, async (req, res) => {
      await push.receive(req, res, (tenant) => TENANTS.has(tenant));
    }],
  ];

  const server = createServer(async (req, res) => {
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
      if (err instanceof ConnectorsError) return relayError(res, err);
      console.error(`core: ${req.method} ${path} failed:`, err);
      send(res, 502, { error: { code: 'UPSTREAM_UNREACHABLE', message: 'the connectors service is unreachable' } });
    }
  });
  server.push = push;
  server.on('close', () => push.close());
  return server;
}

/// Starts a Core server, resolves with its URL once it listens and has registered its push
/// endpoint with the service.
export async function startCoreServer({ connectorsUrl, token, host = '127.0.0.1', port = 0, publicUrl, callbackPattern }) {
  let url = publicUrl;
  const server = createCoreServer({ connectorsUrl, token, publicUrl: () => url, callbackPattern });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  url ??= `http://${host}:${server.address().port}`;
  try {
    await server.push.subscribe(`${url}/hooks/connectors`);
  } catch (err) {
    server.close();
    throw new Error(
      `could not register ${url}/hooks/connectors for push (${err.code ?? err.message}): the service ` +
        'must accept its URL (https, or POBLYSH_PUSH_ALLOW_HTTP=true) and address (POBLYSH_PUSH_ALLOWED_ADDRESSES)',
    );
  }
  return {
    server,
    url,
    push: server.push,
    /// Ends the page streams and stops listening.
    stop: () => new Promise((resolve) => {
      server.close(resolve);
      server.push.close();
      server.closeAllConnections();
    }),
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const connectorsUrl = process.env.CONNECTORS_URL ?? 'http://127.0.0.1:8080';
  const token = process.env.CONNECTORS_OPERATOR_TOKEN;
  if (!token) {
    console.error('set CONNECTORS_OPERATOR_TOKEN to an operator token of the service');
    process.exit(2);
  }
  const port = Number.parseInt(process.env.CORE_PORT ?? '3000', 10);
  const { url } = await startCoreServer({
    connectorsUrl,
    token,
    port,
    publicUrl: process.env.CORE_PUBLIC_URL,
    callbackPattern: process.env.CORE_CALLBACK_PATTERN ?? 'A',
  });
  console.log(`Core listening on ${url} (connectors at ${connectorsUrl})`);
}
