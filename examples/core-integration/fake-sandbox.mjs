// A stand-in for the sandbox provider's remote API (the contract in
// src/providers/sandbox/api.rs and subscription.rs), so the browser test decides when the
// provider has something new: the service started with POBLYSH_SANDBOX_API_BASE_URL at this
// server syncs exactly the events added here.

import { createServer } from 'node:http';

/// Starts the fake API on a free loopback port; resolves with `{ url, add, clear, close }`.
export async function startFakeSandbox() {
  let events = [];
  let seq = 0;
  let subscriptions = 0;
  const inAnHour = () => new Date(Date.now() + 3_600_000).toISOString();
  const send = (res, status, body) => {
    res.writeHead(status, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(body));
  };

  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://sandbox.invalid');
    req.resume();
    if (req.method === 'GET' && url.pathname === '/v1/events') {
      const after = Number(url.searchParams.get('after') ?? 0);
      const limit = Number(url.searchParams.get('limit') ?? 100);
      const later = events.filter((e) => e.seq > after);
      return send(res, 200, { events: later.slice(0, limit), has_more: later.length > limit });
    }
    if (req.method === 'POST' && url.pathname === '/v1/subscriptions') {
      subscriptions += 1;
      return send(res, 201, { id: `sub-${subscriptions}`, expires_at: inAnHour() });
    }
    const renew = /^\/v1\/subscriptions\/([^/]+)\/renew$/.exec(url.pathname);
    if (req.method === 'POST' && renew) return send(res, 200, { id: renew[1], expires_at: inAnHour() });
    if (req.method === 'DELETE' && url.pathname.startsWith('/v1/subscriptions/')) {
      res.writeHead(204).end();
      return undefined;
    }
    return send(res, 404, { error: 'not found' });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });

  return {
    url: `http://127.0.0.1:${server.address().port}`,
    /// A new item: the next sync of every sandbox connection finds it.
    add(title) {
      seq += 1;
      events.push({
        seq,
        type: 'event.created',
        id: `item-${seq}`,
        title,
        occurred_at: new Date().toISOString(),
        actor: { id: 'u-ada', name: 'Ada' },
      });
    },
    /// Forgets every item: connections made from now on find nothing until the next `add`.
    clear() {
      events = [];
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}
