#!/usr/bin/env node
// The OpenID provider of the demo stack and the end-to-end tests: npm
// `oidc-provider` 9.x (pinned in envoy-demo/package-lock.json; `make idp-deps`
// installs it into envoy-demo/node_modules), with a real HTML login form.
//
//   PORT=9400 node envoy-demo/idp.mjs          issuer http://127.0.0.1:$PORT
//
// Environment (all optional):
//   PORT            listen port on 127.0.0.1 (default 9400)
//   CLIENT_ID       the filter's client id (default mcp-oauth-filter)
//   CLIENT_SECRET   its secret (default demo-idp-secret); client_secret_basic
//   REDIRECT_URIS   comma list of the filter's callbacks, <route origin>/.oauth/callback
//                   (default http://127.0.0.1:10000/.oauth/callback)
//   ID_TOKEN_ALG    RS256 (default) or ES256: how the filter's ID tokens are signed
//   AT_TTL          access token lifetime in seconds (default 600)
//   RT_TTL          refresh token lifetime in seconds (default 86400)
//   PROVIDER_NAME   what the pages call this provider (default "the demo IdP")
//   IDP_DEBUG=1     serve GET /_debug/log: every request seen (method, path,
//                   status, and the grant_type of token requests) and every token
//                   answer given (with account, time and lifetime), so tests can
//                   prove the filter never hands the provider's tokens to its own
//                   clients and count refresh calls; and POST
//                   /_debug/revoke?account=<id>, which revokes every grant of that
//                   account with its tokens (as a user removing the app would).
//                   Off in the demo.
//
// Options for running it as an upstream OAuth2 provider (the API an MCP server
// calls, whose tokens the filter keeps and refreshes), as the e2e tests do:
//   ROTATE_REFRESH_TOKENS=1  every refresh answer has a new refresh token; the
//                   old one is spent, and presenting a spent one revokes the
//                   whole grant (oidc-provider's reuse detection)
//   ALWAYS_REFRESH_TOKEN=1   issue refresh tokens without offline_access/prompt=consent
//   CONSENT_PAGE=1  show a consent form (Allow / Deny) instead of granting
//                   without a page; Deny sends error=access_denied back
//   OPEN_SIGNUP=1   any email address signs in as a user of its own (sub = the
//                   address), so each test can have users no other test touches
//
// The flow a browser sees: GET /auth?... -> 303 /interaction/<uid>, an HTML
// login form whose first form, submitted as served, signs in as alice ->
// POST /interaction/<uid>/login -> 303 /auth/<uid> -> consent is granted
// without a page (303 /interaction/<uid2> -> 303 /auth/<uid2>) -> 303 to the
// filter's callback with ?code&state&iss.
//
// The ID token carries only `sub` (and the protocol claims): oidc-provider's
// default conformIdTokenClaims keeps scope claims (email, groups...) for the
// userinfo endpoint (/me) when an access token is issued, so the filter has to
// call userinfo to learn the email.
import { generateKeyPairSync } from 'node:crypto';

import Provider from 'oidc-provider';

const PORT = Number(process.env.PORT || 9400);
const ISSUER = `http://127.0.0.1:${PORT}`;
const CLIENT_ID = process.env.CLIENT_ID || 'mcp-oauth-filter';
const CLIENT_SECRET = process.env.CLIENT_SECRET || 'demo-idp-secret';
const REDIRECT_URIS = (process.env.REDIRECT_URIS || 'http://127.0.0.1:10000/.oauth/callback')
  .split(',').map((s) => s.trim()).filter(Boolean);
const ID_TOKEN_ALG = process.env.ID_TOKEN_ALG || 'RS256';
const AT_TTL = Number(process.env.AT_TTL || 600);
const RT_TTL = Number(process.env.RT_TTL || 86400);
const PROVIDER_NAME = process.env.PROVIDER_NAME || 'the demo IdP';
const DEBUG = process.env.IDP_DEBUG === '1';
const ROTATE_REFRESH_TOKENS = process.env.ROTATE_REFRESH_TOKENS === '1';
const ALWAYS_REFRESH_TOKEN = process.env.ALWAYS_REFRESH_TOKEN === '1';
const CONSENT_PAGE = process.env.CONSENT_PAGE === '1';
const OPEN_SIGNUP = process.env.OPEN_SIGNUP === '1';

if (!['RS256', 'ES256'].includes(ID_TOKEN_ALG)) {
  console.error(`ID_TOKEN_ALG must be RS256 or ES256, not ${JSON.stringify(ID_TOKEN_ALG)}`);
  process.exit(2);
}

// Fresh signing keys at every start, so the filter has to fetch the JWKS.
function signingKey(type, options, alg) {
  const jwk = generateKeyPairSync(type, options).privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: `${alg.toLowerCase()}-${PORT}-${Date.now().toString(36)}`, use: 'sig', alg };
}
const keys = [
  signingKey('rsa', { modulusLength: 2048 }, 'RS256'),
  signingKey('ec', { namedCurve: 'P-256' }, 'ES256'),
];

// The users. Sign-in accepts the account id or the email address.
const USERS = {
  alice: {
    sub: 'alice', email: 'alice@company.com', email_verified: true,
    name: 'Alice Example', preferred_username: 'alice', groups: ['engineering'],
  },
  bob: {
    sub: 'bob', email: 'bob@other.example', email_verified: true,
    name: 'Bob Other', preferred_username: 'bob', groups: [],
  },
};
function findUser(login) {
  const wanted = String(login || '').trim().toLowerCase();
  const known = Object.values(USERS).find((u) => u.sub === wanted || u.email === wanted);
  if (known || !OPEN_SIGNUP || !/^[a-z0-9._+-]+@[a-z0-9.-]+$/.test(wanted)) return known;
  const local = wanted.split('@')[0];
  USERS[wanted] = {
    sub: wanted, email: wanted, email_verified: true, name: local, preferred_username: local, groups: [],
  };
  return USERS[wanted];
}

const provider = new Provider(ISSUER, {
  clients: [{
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    token_endpoint_auth_method: 'client_secret_basic',
    redirect_uris: REDIRECT_URIS,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    id_token_signed_response_alg: ID_TOKEN_ALG,
  }],
  jwks: { keys },
  enabledJWA: { idTokenSigningAlgValues: ['RS256', 'ES256'] },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username', 'groups'],
    groups: ['groups'],
  },
  findAccount: async (_ctx, id) => (USERS[id]
    ? { accountId: id, claims: async () => ({ ...USERS[id] }) }
    : undefined),
  pkce: { required: () => true }, // S256 only (oidc-provider 9's default methods)
  // The default 15 s would let tokens live 15 s past their expiry.
  clockTolerance: 0,
  ttl: {
    AccessToken: AT_TTL,
    IdToken: 3600,
    AuthorizationCode: 60,
    RefreshToken: RT_TTL,
    Interaction: 600,
    Session: 86400,
    Grant: 86400,
  },
  features: {
    devInteractions: { enabled: false },
    userinfo: { enabled: true },
    revocation: { enabled: true },
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  // Reuse of a spent refresh token revokes the grant (oidc-provider does that
  // whenever a consumed token comes back).
  ...(ROTATE_REFRESH_TOKENS ? { rotateRefreshToken: true } : {}),
  ...(ALWAYS_REFRESH_TOKEN
    ? { issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token') }
    : {}),
  cookies: { keys: [`idp-cookie-key-${PORT}-${Math.random()}`] },
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = page('Sign-in error', `<p class="error">${escape(out.error)}: ${escape(out.error_description || '')}</p>`);
  },
});
provider.proxy = false;

// --- debug log (tests only) ------------------------------------------------

const seen = [];
const issued = [];
const grantsOf = new Map(); // accountId -> Set of grant ids
const now = () => Date.now() / 1000;
provider.on('grant.success', (ctx) => {
  const body = ctx.body || {};
  if (DEBUG) {
    issued.push({
      grant_type: ctx.oidc.params.grant_type,
      account: ctx.oidc.account?.accountId,
      at: now(),
      expires_in: body.expires_in,
      access_token: body.access_token, id_token: body.id_token, refresh_token: body.refresh_token,
    });
  }
});
provider.on('authorization_code.saved', (code) => {
  if (!grantsOf.has(code.accountId)) grantsOf.set(code.accountId, new Set());
  grantsOf.get(code.accountId).add(code.grantId);
});

// Everything the account granted, gone: its grants and every token of them.
async function revokeAccount(accountId) {
  const grants = [...(grantsOf.get(accountId) || [])];
  for (const grantId of grants) {
    await Promise.all([
      provider.AccessToken.revokeByGrantId(grantId),
      provider.RefreshToken.revokeByGrantId(grantId),
      provider.AuthorizationCode.revokeByGrantId(grantId),
      provider.Grant.adapter.destroy(grantId),
    ]);
  }
  grantsOf.delete(accountId);
  return grants.length;
}
provider.on('server_error', (_ctx, err) => console.error('server_error', err));

// --- pages -----------------------------------------------------------------

function escape(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title>
<style>body{font-family:sans-serif;max-width:28em;margin:3em auto}label,input,button{display:block;margin:.4em 0}.error{color:#b00}</style>
</head><body><h1>${escape(title)}</h1>
${body}
</body></html>`;
}

function loginPage(uid, clientId, error, login) {
  const users = Object.values(USERS).filter((u) => u.sub !== u.email)
    .map((u) => `<li>${escape(u.email)}</li>`).join('');
  return page(`Sign in to ${PROVIDER_NAME}`, `
${error ? `<p class="error">${escape(error)}</p>` : ''}
<p>Signing in for <code>${escape(clientId)}</code>.</p>
<form method="post" action="/interaction/${escape(uid)}/login" autocomplete="off">
  <label for="login">Email or user name</label>
  <input type="text" id="login" name="login" value="${escape(login)}" required autofocus>
  <button type="submit">Sign in</button>
</form>
<p>Demo users (no password): </p><ul>${users}</ul>
<form method="post" action="/interaction/${escape(uid)}/abort">
  <button type="submit">Cancel</button>
</form>`);
}

function consentPage(uid, clientId, scopes, user) {
  return page(`${PROVIDER_NAME}: allow access?`, `
<p>Signed in as <strong>${escape(user)}</strong>.</p>
<p><code>${escape(clientId)}</code> asks for access to your account${scopes.length
    ? ` (scopes: <code>${escape(scopes.join(' '))}</code>)` : ''}.</p>
<form method="post" action="/interaction/${escape(uid)}/consent">
  <button type="submit">Allow</button>
</form>
<form method="post" action="/interaction/${escape(uid)}/abort">
  <button type="submit">Deny</button>
</form>`);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function noStore(ctx) {
  ctx.set('Cache-Control', 'no-store');
}

// --- interactions ----------------------------------------------------------

provider.use(async (ctx, next) => {
  const entry = { method: ctx.method, path: ctx.path, at: now() };
  if (DEBUG && !ctx.path.startsWith('/_debug/')) seen.push(entry);
  await next();
  entry.status = ctx.status;
  if (ctx.path === '/token') {
    entry.grant_type = ctx.oidc?.params?.grant_type;
    // Whose token it was, when the provider could tell (not for a refused one).
    const entities = ctx.oidc?.entities ?? {};
    entry.account = (entities.RefreshToken ?? entities.AuthorizationCode)?.accountId;
  }
  console.log(`${ctx.method} ${ctx.path} -> ${ctx.status}${entry.grant_type ? ` (${entry.grant_type})` : ''}`);
});

provider.use(async (ctx, next) => {
  if (DEBUG && ctx.method === 'GET' && ctx.path === '/_debug/log') {
    ctx.body = { requests: seen, issued };
    return;
  }
  if (DEBUG && ctx.method === 'POST' && ctx.path === '/_debug/revoke') {
    const account = ctx.query.account || '';
    ctx.body = { account, revoked_grants: await revokeAccount(account) };
    return;
  }

  const m = ctx.path.match(/^\/interaction\/([^/]+)(?:\/(login|abort|consent))?$/);
  if (!m) return next();
  const [, uid, action] = m;
  noStore(ctx);

  let details;
  try {
    details = await provider.interactionDetails(ctx.req, ctx.res);
  } catch (err) {
    ctx.status = 400;
    ctx.type = 'html';
    ctx.body = page('Sign-in error', `<p class="error">${escape(err.message)}</p>`);
    return;
  }
  if (details.uid !== uid) {
    ctx.status = 400;
    ctx.type = 'html';
    ctx.body = page('Sign-in error', '<p class="error">this sign-in page does not belong to the current sign-in</p>');
    return;
  }
  const { prompt, params, session } = details;

  if (action === 'abort' && ctx.method === 'POST') {
    await provider.interactionFinished(ctx.req, ctx.res, {
      error: 'access_denied', error_description: 'the user cancelled the sign-in',
    }, { mergeWithLastSubmission: false });
    return;
  }

  if (prompt.name === 'login') {
    if (action === 'login' && ctx.method === 'POST') {
      const form = await readForm(ctx.req);
      const user = findUser(form.get('login'));
      if (!user) {
        ctx.status = 200;
        ctx.type = 'html';
        ctx.body = loginPage(uid, params.client_id, `unknown user ${form.get('login') || '(empty)'}`, form.get('login') || '');
        return;
      }
      await provider.interactionFinished(ctx.req, ctx.res, { login: { accountId: user.sub } },
        { mergeWithLastSubmission: false });
      return;
    }
    if (ctx.method !== 'GET' || action) {
      ctx.status = 405;
      return;
    }
    ctx.type = 'html';
    ctx.body = loginPage(uid, params.client_id, null, params.login_hint || USERS.alice.email);
    return;
  }

  // Consent: with CONSENT_PAGE, the user allows it on a page; otherwise it is
  // granted without one. A grant revoked meanwhile is gone: start a new one.
  if (CONSENT_PAGE && action !== 'consent') {
    if (ctx.method !== 'GET' || action) {
      ctx.status = 405;
      return;
    }
    ctx.type = 'html';
    const user = USERS[session.accountId];
    ctx.body = consentPage(uid, params.client_id, String(params.scope || '').split(' ').filter(Boolean),
      user ? user.email : session.accountId);
    return;
  }
  if (action === 'consent' && ctx.method !== 'POST') {
    ctx.status = 405;
    return;
  }
  const grant = (details.grantId && await provider.Grant.find(details.grantId))
    || new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const d = prompt.details;
  if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
  if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
  if (d.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(d.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const grantId = await grant.save();
  await provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true });
});

const server = provider.listen(PORT, '127.0.0.1', () => {
  const options = [DEBUG && 'debug log on', ROTATE_REFRESH_TOKENS && 'rotating refresh tokens',
    ALWAYS_REFRESH_TOKEN && 'refresh tokens always', CONSENT_PAGE && 'consent page', OPEN_SIGNUP && 'open sign-up']
    .filter(Boolean);
  console.log(`oidc-provider ${ISSUER} ready: client ${CLIENT_ID}, ID tokens ${ID_TOKEN_ALG}, `
    + `access tokens ${AT_TTL}s, redirect_uris ${REDIRECT_URIS.join(' ')}`
    + `${options.length ? `, ${options.join(', ')}` : ''}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => { server.close(); process.exit(0); });
}
