import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { DevContext } from './context.js';
import { DEFAULT_GRANT_TYPES } from './context.js';
import { authenticateTokenClient } from './client-auth.js';
import { asParams, OAuthError, stringParam } from './params.js';
import { grantScopes } from './scopes.js';
import { randomSecret } from './secrets.js';
import { signAccessToken } from './signing.js';
import type { DevClient } from './types.js';
import { displayName } from './users.js';

const PASSWORD_GRANTS = new Set(['password', 'http://auth0.com/oauth/grant-type/password-realm']);

const wrongPassword = (): OAuthError => new OAuthError(403, 'invalid_grant', 'Wrong email or password.');
const blocked = (): OAuthError =>
  new OAuthError(429, 'too_many_attempts', 'Your account has been blocked after multiple consecutive login attempts.');

function normaliseIp(ip: string | undefined): string {
  if (ip === undefined) return 'unknown';
  return ip.startsWith('::ffff:') ? ip.slice('::ffff:'.length) : ip;
}

/**
 * The end user's IP for brute-force protection: Auth0 takes `auth0-forwarded-for` only from a
 * client with "Trust Token Endpoint IP Header" on, otherwise the caller's own address.
 */
function endUserIp(client: Readonly<DevClient>, request: FastifyRequest): string {
  const forwarded = request.headers['auth0-forwarded-for'];
  if (client.trustForwardedFor === true && typeof forwarded === 'string') {
    const first = forwarded.split(',')[0]?.trim();
    if (first !== undefined && first !== '') return first;
  }
  return normaliseIp(request.socket.remoteAddress);
}

/** Resource Owner Password grant (RFC 6749 §4.3) as Auth0 answers it. */
export function registerTokenEndpoint(app: FastifyInstance, ctx: DevContext): void {
  app.post('/oauth/token', async (request, reply) => {
    ctx.counters.tokenRequests += 1;
    const params = asParams(request.body);
    const client = authenticateTokenClient(ctx, request, params);

    const grantType = stringParam(params, 'grant_type');
    if (grantType === undefined) throw new OAuthError(400, 'invalid_request', 'Missing required parameter: grant_type');
    const allowed = client.grantTypes ?? DEFAULT_GRANT_TYPES;
    if (!allowed.includes(grantType) || !PASSWORD_GRANTS.has(grantType)) {
      throw new OAuthError(403, 'unauthorized_client', `Grant type '${grantType}' not allowed for the client.`);
    }

    const audience = stringParam(params, 'audience') ?? ctx.audience;
    if (!ctx.apis.has(audience)) throw new OAuthError(403, 'access_denied', `Service not found: ${audience}`);

    const username = stringParam(params, 'username');
    const password = stringParam(params, 'password');
    if (username === undefined || password === undefined) {
      throw new OAuthError(400, 'invalid_request', 'Missing required parameter: username and password');
    }
    const requestedScope = stringParam(params, 'scope');

    const ip = endUserIp(client, request);
    // Auth0 counts failures per account (whichever of its login names was typed) and IP.
    const known = ctx.users.find(username);
    const account = known === undefined ? username : displayName(known);
    if (ctx.lockout.isBlocked(account, ip)) throw blocked();
    const user = ctx.users.authenticate(username, password);
    if (user === undefined) {
      ctx.lockout.recordFailure(account, ip);
      throw wrongPassword();
    }
    ctx.lockout.recordSuccess(account, ip);
    if (user.mfa) {
      throw new OAuthError(403, 'mfa_required', 'Multifactor authentication required', { mfa_token: randomSecret(32) });
    }

    const grant = grantScopes(requestedScope, user.permissions);
    const accessToken = await signAccessToken(ctx.signingKey, {
      issuer: ctx.issuer,
      user,
      audience,
      clientId: client.clientId,
      grant,
      expiresInSeconds: ctx.accessTokenTtlSeconds,
    });
    const body: Record<string, unknown> = {
      access_token: accessToken,
      token_type: 'Bearer',
      expires_in: ctx.accessTokenTtlSeconds,
      scope: grant.scope,
    };
    if (grant.scopes.includes('offline_access')) {
      body['refresh_token'] = ctx.tokens.create({
        kind: 'refresh_token',
        tokenType: 'refresh_token',
        sub: user.sub,
        scope: grant.scope,
        audience,
        clientId: client.clientId,
        expiresAt: undefined,
      }).secret;
    }
    // RFC 6749 §5.1: responses with tokens must not be cached.
    return reply.header('cache-control', 'no-store').header('pragma', 'no-cache').send(body);
  });
}
