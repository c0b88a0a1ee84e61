import type { FastifyRequest } from 'fastify';
import type { DevContext } from './context.js';
import { OAuthError, parseBasicClient, stringParam } from './params.js';
import type { Params } from './params.js';
import { secretsEqual } from './secrets.js';
import type { DevClient } from './types.js';

/** What Auth0 answers at the token endpoint for an unknown client or a wrong secret. */
const UNAUTHORIZED = (): OAuthError => new OAuthError(401, 'access_denied', 'Unauthorized');

export interface ClientSecretCredentials {
  readonly id: string;
  readonly secret: string;
}

/**
 * client_secret_basic or client_secret_post (RFC 6749 §2.3.1). Using both at once is refused:
 * "The client MUST NOT use more than one authentication method in each request."
 */
export function readClientSecret(request: FastifyRequest, params: Params): ClientSecretCredentials | undefined {
  const header = request.headers.authorization;
  const bodyId = stringParam(params, 'client_id');
  const bodySecret = stringParam(params, 'client_secret');
  if (header !== undefined && /^basic\b/i.test(header)) {
    const basic = parseBasicClient(header);
    if (basic === undefined) throw new OAuthError(400, 'invalid_request', 'Malformed Authorization header');
    if (bodySecret !== undefined) {
      throw new OAuthError(400, 'invalid_request', 'Only one client authentication method may be used');
    }
    if (bodyId !== undefined && bodyId !== basic.id) {
      throw new OAuthError(400, 'invalid_request', 'client_id does not match the Authorization header');
    }
    return basic;
  }
  if (bodyId === undefined || bodySecret === undefined) return undefined;
  return { id: bodyId, secret: bodySecret };
}

/** The token endpoint's client, or 401 `access_denied` like Auth0. */
export function authenticateTokenClient(ctx: DevContext, request: FastifyRequest, params: Params): Readonly<DevClient> {
  const credentials = readClientSecret(request, params);
  if (credentials === undefined) throw UNAUTHORIZED();
  const client = ctx.clients.get(credentials.id);
  // Compare even for an unknown client so the answer time does not tell which clients exist.
  const ok = secretsEqual(credentials.secret, client?.clientSecret ?? '\u0000unknown client');
  if (client === undefined || !ok) throw UNAUTHORIZED();
  return client;
}
