import type { FastifyInstance, FastifyRequest } from 'fastify';
import { JWT_BEARER_ASSERTION_TYPE } from './client-assertion.js';
import { readClientSecret } from './client-auth.js';
import type { DevContext } from './context.js';
import { introspectionEndpoint, tokenEndpoint } from './context.js';
import { asParams, OAuthError, stringParam } from './params.js';
import type { Params } from './params.js';
import { secretsEqual } from './secrets.js';
import { verifyOwnAccessToken } from './signing.js';
import { displayName } from './users.js';

const invalidClient = (description: string): OAuthError => new OAuthError(401, 'invalid_client', description);

/**
 * Who may introspect: the resource server itself, by `private_key_jwt` (RFC 7523) with its API
 * identifier as client id, or by `resourceServerClientSecret` when one is configured.
 */
async function authenticateResourceServer(ctx: DevContext, request: FastifyRequest, params: Params): Promise<string> {
  const assertionType = stringParam(params, 'client_assertion_type');
  const assertion = stringParam(params, 'client_assertion');
  if (assertionType !== undefined || assertion !== undefined) {
    if (assertionType !== JWT_BEARER_ASSERTION_TYPE) throw invalidClient('Unsupported client_assertion_type');
    if (assertion === undefined) throw invalidClient('Missing client_assertion');
    return ctx.assertions.verify({
      assertion,
      clientId: stringParam(params, 'client_id'),
      audiences: [ctx.issuer, tokenEndpoint(ctx), introspectionEndpoint(ctx)],
      apis: ctx.apis,
    });
  }
  const credentials = readClientSecret(request, params);
  if (credentials === undefined) throw invalidClient('Client authentication is required');
  const expected = ctx.resourceServerClientSecret;
  const ok = secretsEqual(credentials.secret, expected ?? '\u0000no secret configured');
  if (expected === undefined || credentials.id !== ctx.audience || !ok) throw invalidClient('Invalid client credentials');
  return credentials.id;
}

/**
 * The RFC 7662 answer. Fail closed (as oidc-provider does): it starts as `{active: false}` and
 * only a token found active by one of the explicit lookups below changes it.
 */
async function introspect(ctx: DevContext, token: string): Promise<Record<string, unknown>> {
  const opaque = ctx.tokens.findActive(token);
  if (opaque !== undefined) {
    const user = ctx.users.bySub(opaque.sub);
    if (user === undefined) return { active: false };
    const answer: Record<string, unknown> = {
      active: true,
      token_type: opaque.tokenType,
      scope: opaque.scope,
      sub: opaque.sub,
      aud: opaque.audience,
      iss: ctx.issuer,
      iat: Math.floor(opaque.createdAt / 1000),
      username: displayName(user),
    };
    if (opaque.expiresAt !== undefined) answer['exp'] = Math.floor(opaque.expiresAt / 1000);
    if (opaque.clientId !== undefined) answer['client_id'] = opaque.clientId;
    return answer;
  }
  const claims = await verifyOwnAccessToken(ctx.signingKey, ctx.issuer, token);
  if (claims !== undefined) {
    const user = typeof claims.sub === 'string' ? ctx.users.bySub(claims.sub) : undefined;
    const answer: Record<string, unknown> = {
      active: true,
      token_type: 'access_token',
      scope: claims['scope'],
      sub: claims.sub,
      aud: claims.aud,
      iss: claims.iss,
      iat: claims.iat,
      exp: claims.exp,
      client_id: claims['azp'],
    };
    if (user !== undefined) answer['username'] = displayName(user);
    return answer;
  }
  return { active: false };
}

export function registerIntrospectionEndpoint(app: FastifyInstance, ctx: DevContext): void {
  app.post('/oauth/introspect', async (request, reply) => {
    ctx.counters.introspectionRequests += 1;
    const params = asParams(request.body);
    await authenticateResourceServer(ctx, request, params);
    const token = stringParam(params, 'token');
    if (token === undefined) throw new OAuthError(400, 'invalid_request', 'Missing required parameter: token');
    return reply.header('cache-control', 'no-store').send(await introspect(ctx, token));
  });
}
