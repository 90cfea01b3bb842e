// Core's side of push: registers where the Connectors service delivers events, verifies every
// delivery with the Standard Webhooks reference library, drops duplicates by `webhook-id`, and
// streams what concerns a tenant to that tenant's open pages as Server-Sent Events.
//
//   POST /hooks/connectors   deliveries from the service (signed; answered 204 at once)
//   GET  /api/events         the page's live stream (text/event-stream), for the session's tenant

import { Webhook } from 'standardwebhooks';

/// The largest delivery body read; the service's events are far smaller.
const MAX_BODY_BYTES = 1024 * 1024;
/// `webhook-id`s remembered to drop redeliveries; a retry comes within hours, a replay on demand.
const SEEN_IDS = 10_000;
/// Events kept per tenant so a page that reconnects (`Last-Event-ID`) misses nothing.
const REPLAY_EVENTS = 100;
/// An SSE comment this often keeps proxies from closing an idle stream.
const HEARTBEAT_MS = 20_000;

/// What a delivery becomes for the page: only what the page renders, never the tenant id.
function forPage({ type, data }) {
  if (type === 'signal.created') {
    const { id, connection_id, provider, kind, title, actor, occurred_at, url } = data;
    return { event: 'signal', data: { id, connection_id, provider, kind, title, actor, occurred_at, url } };
  }
  if (type === 'connection.created' || type === 'connection.status_changed') {
    const { connection_id: id, provider, status, previous_status } = data;
    return { event: 'connection', data: { id, provider, status, previous_status } };
  }
  return null; // subscription.failed and event types added later: an operator's matter
}

/// One Server-Sent Event.
function frame({ id, event, data }) {
  return `id: ${id}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

async function readRaw(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) return null;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/// The push side of one Core server. `connectors` is its client of the service.
export function createPush(connectors) {
  let webhook = null; // the verifier, once the secret is known
  let endpointId = null;
  const stats = { received: 0, duplicates: 0, rejected: 0, streamed: 0 };
  const seen = new Map(); // webhook-id → true, oldest first
  const recent = new Map(); // tenant → [{ id, event, data }], oldest first
  const streams = new Set(); // { tenant, res }

  const heartbeat = setInterval(() => {
    for (const stream of streams) write(stream, ': heartbeat\n\n');
  }, HEARTBEAT_MS);
  heartbeat.unref();

  // A page that cannot keep up is cut off rather than buffered without bound; its browser
  // reconnects with Last-Event-ID and catches up from `recent`.
  function write(stream, text) {
    if (!stream.res.write(text)) {
      streams.delete(stream);
      stream.res.destroy();
    }
  }

  function publish(tenant, message) {
    const kept = recent.get(tenant) ?? [];
    kept.push(message);
    if (kept.length > REPLAY_EVENTS) kept.shift();
    recent.set(tenant, kept);
    const text = frame(message);
    for (const stream of streams) {
      if (stream.tenant === tenant) {
        write(stream, text);
        stats.streamed += 1;
      }
    }
  }

  return {
    stats,
    get endpointId() {
      return endpointId;
    },

    /// Registers `hookUrl` to receive every tenant's events, and keeps its secret.
    ///
    /// One operator-wide endpoint (no `X-Tenant-Id`), as a Core serving many organisations
    /// would: one URL and one secret to keep, nothing to register when an organisation is
    /// created, and each event names its `tenant_id`, which Core maps back through the same
    /// table it derives `X-Tenant-Id` from. Per-tenant endpoints suit a Core that hands each
    /// tenant's events to a different system.
    async subscribe(hookUrl) {
      const { endpoints } = await connectors('GET', '/endpoints?limit=100');
      const existing = endpoints.find((e) => e.url === hookUrl);
      if (existing) {
        // The secret is shown only when an endpoint is created or its secret rotated. This Core
        // keeps it in memory, so after a restart it rotates: pending deliveries stay, and the
        // old secret signs beside the new one for a while. A Core that keeps the secret in its
        // secret store reuses it instead.
        const { secret } = await connectors('POST', `/endpoints/${existing.id}/secret/rotate`);
        if (existing.status !== 'active') {
          await connectors('PATCH', `/endpoints/${existing.id}`, { body: { status: 'active' } });
        }
        webhook = new Webhook(secret);
        endpointId = existing.id;
      } else {
        const created = await connectors('POST', '/endpoints', {
          body: { url: hookUrl, description: 'Poblysh Core: live updates of the Connected tools page' },
        });
        webhook = new Webhook(created.secret);
        endpointId = created.id;
      }
    },

    /// `POST /hooks/connectors`: verify, answer, then hand the event on.
    async receive(req, res, tenantKnown) {
      const raw = await readRaw(req);
      if (raw === null) {
        res.writeHead(413).end();
        return;
      }
      if (!webhook) {
        // Not subscribed yet: the service tries again in a few seconds.
        res.writeHead(503, { 'Retry-After': '5' }).end();
        return;
      }
      let event;
      try {
        // The raw body, before any parsing; also refuses timestamps more than 5 minutes off.
        event = webhook.verify(raw, req.headers);
      } catch (err) {
        stats.rejected += 1;
        console.warn(`core: rejected a push delivery (${err.message}); ${stats.rejected} rejected so far`);
        res.writeHead(400, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ error: { code: 'INVALID_SIGNATURE', message: 'the signature does not verify' } }));
        return;
      }
      // Answer at once: the service times an attempt out after 15 s and would send it again.
      res.writeHead(204).end();
      const id = req.headers['webhook-id'];
      if (seen.has(id)) {
        stats.duplicates += 1; // a retry or a replay: already handled
        return;
      }
      seen.set(id, true);
      if (seen.size > SEEN_IDS) seen.delete(seen.keys().next().value);
      stats.received += 1;
      const tenant = event.data?.tenant_id;
      const message = forPage(event);
      if (message && tenantKnown(tenant)) publish(tenant, { id, ...message });
    },

    /// `GET /api/events`: the tenant's events as they arrive, after those the browser missed.
    stream(req, res, tenant) {
      res.writeHead(200, {
        'Content-Type': 'text/event-stream',
        'Cache-Control': 'no-store',
        'X-Accel-Buffering': 'no',
      });
      const stream = { tenant, res };
      streams.add(stream);
      req.on('close', () => streams.delete(stream));
      write(stream, 'retry: 2000\n\n');
      const lastId = req.headers['last-event-id'];
      const kept = recent.get(tenant) ?? [];
      const from = lastId ? kept.findIndex((m) => m.id === lastId) + 1 : kept.length;
      for (const message of kept.slice(from)) write(stream, frame(message));
    },

    /// Ends every stream (so the server can close) and the heartbeat.
    close() {
      clearInterval(heartbeat);
      for (const stream of streams) stream.res.end();
      streams.clear();
    },
  };
}
