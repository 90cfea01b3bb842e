// A real OAuth 2.0 authorization server for the connect-journey tests (tests/it/oidc.rs):
// oidc-provider (panva) serving GitHub's OAuth App paths, so the GitHub connector talks to it
// unchanged once POBLYSH_GITHUB_AUTH_BASE_URL and POBLYSH_GITHUB_API_BASE_URL point here.
//
//   authorize  GET  /login/oauth/authorize     authorization code, PKCE S256 required
//   token      POST /login/oauth/access_token  client_secret_post; code and refresh_token grants
//   account    GET  /user                      the userinfo endpoint: {"sub", "id", "login"}
//
// Protocol on stdio (one line each):
//   stdout  READY <port>       listening on 127.0.0.1:<port> (`--port N`, default any free port)
//   stdin   {"client_id", "client_secret", "redirect_uri", "account": {"id", "login"}}
//   stdout  CONFIGURED         the client and the account exist; requests are served
//   stdout  EVENT <json>       what happened: interactions, grants, errors with their detail
// Until the configuration line arrives every request answers 503. The process exits when its
// stdin closes, on SIGTERM and on SIGINT, so a test never leaves it behind.
//
// The login and consent screens are automatic: the interaction endpoint signs the configured
// account in, then grants every scope the client asked for, as a user clicking through would.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';

import Provider, { interactionPolicy } from 'oidc-provider';

const SCOPES = ['openid', 'offline_access', 'repo', 'read:org', 'read:user'];

function emit(event, fields = {}) {
  process.stdout.write(`EVENT ${JSON.stringify({ event, ...fields })}\n`);
}

function errorFields(err) {
  return {
    error: err?.error ?? err?.name ?? 'error',
    description: err?.error_description,
    detail: err?.error_detail ?? err?.message,
  };
}

function portArgument() {
  const at = process.argv.indexOf('--port');
  return at === -1 ? 0 : Number.parseInt(process.argv[at + 1], 10);
}

let provider;
let handler;
let accountId;

function configure(settings, issuer) {
  const { client_id: clientId, client_secret: clientSecret, redirect_uri: redirectUri } = settings;
  const account = { id: settings.account.id, login: settings.account.login };
  accountId = String(account.id);
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });

  provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
    }],
    routes: {
      authorization: '/login/oauth/authorize',
      token: '/login/oauth/access_token',
      userinfo: '/user',
    },
    scopes: SCOPES,
    // `/user` answers like GitHub's: the numeric id and the login.
    claims: { openid: ['sub'], 'read:user': ['id', 'login'] },
    async findAccount(_ctx, sub) {
      if (sub !== accountId) return undefined;
      return {
        accountId,
        async claims() {
          return { sub: accountId, id: account.id, login: account.login };
        },
      };
    },
    pkce: { methods: ['S256'], required: () => true },
    // GitHub issues refresh tokens without an `offline_access` scope or `prompt=consent`.
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: true,
    // Tokens outlive the browser session, as GitHub's do.
    expiresWithSession: async () => false,
    ttl: {
      AccessToken: 120,
      AuthorizationCode: 60,
      IdToken: 120,
      Interaction: 600,
      Grant: 3600,
      RefreshToken: 3600,
      Session: 3600,
    },
    features: {
      devInteractions: { enabled: false },
      // Opaque access tokens without an audience, usable at the userinfo endpoint.
      resourceIndicators: { enabled: false },
    },
    interactions: {
      // GitHub honours `prompt=select_account` with its account picker, before sign-in.
      policy: withAccountPicker(),
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    jwks: { keys: [{ ...privateKey.export({ format: 'jwk' }), kid: 'test', use: 'sig', alg: 'RS256' }] },
    cookies: {
      keys: [randomBytes(32).toString('base64url')],
      long: { signed: true, httpOnly: true, sameSite: 'lax' },
      short: { signed: true, httpOnly: true, sameSite: 'lax' },
    },
  });

  provider.on('grant.success', (ctx) => emit('grant.success', { grant_type: ctx.oidc.params.grant_type }));
  for (const event of ['grant.error', 'authorization.error', 'userinfo.error', 'server_error']) {
    provider.on(event, (ctx, err) => emit(event, { grant_type: ctx.oidc?.params?.grant_type, ...errorFields(err) }));
  }
  provider.on('grant.revoked', (_ctx, grantId) => emit('grant.revoked', { grant_id: grantId }));
  handler = provider.callback();
}

// The default interaction policy with a requestable `select_account` prompt first.
function withAccountPicker() {
  const policy = interactionPolicy.base();
  policy.add(new interactionPolicy.Prompt({ name: 'select_account', requestable: true }), 0);
  return policy;
}

// The account picker, login and consent screens, answered at once for the configured account.
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params } = details;
  emit('interaction', { prompt: prompt.name });
  if (prompt.name === 'select_account') {
    // Picking the account signs it in.
    await provider.interactionFinished(req, res, { select_account: {}, login: { accountId } }, { mergeWithLastSubmission: false });
    return;
  }
  if (prompt.name === 'login') {
    await provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
    return;
  }
  if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    const consent = details.grantId ? {} : { grantId };
    await provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
    return;
  }
  res.writeHead(400, { 'content-type': 'text/plain' });
  res.end(`unexpected prompt ${prompt.name}`);
}

const server = createServer((req, res) => {
  if (!handler) {
    res.writeHead(503, { 'content-type': 'text/plain' });
    res.end('not configured yet');
    return;
  }
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => {
      emit('interaction.error', errorFields(err));
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(String(err?.message ?? err));
    });
    return;
  }
  handler(req, res);
});

server.listen(portArgument(), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  process.stdout.write(`READY ${port}\n`);

  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (handler || !line.trim()) return;
    try {
      const settings = JSON.parse(line);
      configure(settings, issuer);
      process.stdout.write('CONFIGURED\n');
    } catch (err) {
      process.stderr.write(`bad configuration line: ${err?.stack ?? err}\n`);
      process.exit(2);
    }
  });
  lines.on('close', () => process.exit(0));
});

for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
