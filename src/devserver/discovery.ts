import type { FastifyInstance } from 'fastify';
import type { DevContext } from './context.js';
import { DEFAULT_GRANT_TYPES, tokenEndpoint } from './context.js';

/**
 * Auth0's discovery document, trimmed to what this server does. Like Auth0's, it does not list
 * an introspection endpoint: clients must fall back to `/oauth/introspect`.
 */
export function registerDiscovery(app: FastifyInstance, ctx: DevContext): void {
  app.get('/.well-known/openid-configuration', async () => ({
    issuer: ctx.issuer,
    authorization_endpoint: `${ctx.issuer}authorize`,
    token_endpoint: tokenEndpoint(ctx),
    userinfo_endpoint: `${ctx.issuer}userinfo`,
    jwks_uri: `${ctx.issuer}.well-known/jwks.json`,
    grant_types_supported: [...DEFAULT_GRANT_TYPES],
    response_types_supported: ['token'],
    subject_types_supported: ['public'],
    token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post', 'private_key_jwt'],
    id_token_signing_alg_values_supported: ['RS256'],
    scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
    claims_supported: ['aud', 'email', 'exp', 'iat', 'iss', 'name', 'sub'],
  }));

  app.get('/.well-known/jwks.json', async () => ({ keys: [ctx.signingKey.publicJwk] }));
}
