/**
 * An embedded development authorization server speaking Auth0's wire format: password grant,
 * RFC 7662 introspection with private_key_jwt, JWKS, brute-force and MFA answers. For dev mode
 * and tests only: users, secrets and keys live in memory.
 */
import type { AddressInfo } from 'node:net';
import { buildDevApp } from './app.js';
import { ClientAssertionVerifier } from './client-assertion.js';
import type { DevContext } from './context.js';
import { LoginLockout } from './lockout.js';
import { OpaqueTokenStore } from './opaque-tokens.js';
import { grantScopes } from './scopes.js';
import { createSigningKey, signAccessToken } from './signing.js';
import type {
  AccessTokenOptions,
  AppPasswordOptions,
  DevAuthorizationServer,
  DevClient,
  DevServerOptions,
  DevStats,
  DevUser,
} from './types.js';
import { UserDirectory } from './users.js';

export type * from './types.js';

export const APP_PASSWORD_TOKEN_TYPE = 'application_specific_password_token';

/** Seeded demo users: alice (read/write), bob (MFA, read only), carol (read:repo only). */
export function defaultDevUsers(): DevUser[] {
  return [
    {
      username: 'alice',
      email: 'alice@example.com',
      password: 'correct horse battery staple',
      sub: 'auth0|alice0001',
      permissions: ['read:repo', 'write:repo', 'read:mail', 'send:mail'],
    },
    {
      username: 'bob',
      email: 'bob@example.com',
      password: 'hunter2-but-longer',
      sub: 'auth0|bob00001',
      permissions: ['read:repo', 'read:mail'],
      mfa: true,
    },
    {
      username: 'carol',
      email: 'carol@example.com',
      password: 'carol-password-1',
      sub: 'auth0|carol001',
      permissions: ['read:repo'],
    },
  ];
}

function positiveInteger(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value <= 0) throw new Error(`devserver: ${name} must be a positive integer`);
  return value;
}

function urlHost(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}

export async function startDevServer(opts: DevServerOptions): Promise<DevAuthorizationServer> {
  if (typeof opts.audience !== 'string' || opts.audience === '') throw new Error('devserver: audience is required');
  const host = opts.host ?? '127.0.0.1';
  const port = opts.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error('devserver: port must be 0..65535');

  const clients = new Map<string, Readonly<DevClient>>();
  for (const c of opts.clients ?? []) {
    if (c.clientId === '' || c.clientSecret === '') throw new Error('devserver: clients need an id and a secret');
    clients.set(c.clientId, Object.freeze({ ...c, grantTypes: c.grantTypes === undefined ? undefined : [...c.grantTypes] }));
  }

  const users = new UserDirectory();
  for (const u of opts.users ?? []) users.add(u);

  const ctx: DevContext = {
    issuer: '',
    audience: opts.audience,
    apis: new Set([opts.audience, ...(opts.extraAudiences ?? [])]),
    clients,
    resourceServerClientSecret: opts.resourceServerClientSecret,
    accessTokenTtlSeconds: positiveInteger('accessTokenTtlSeconds', opts.accessTokenTtlSeconds, 3600),
    users,
    tokens: new OpaqueTokenStore(),
    lockout: new LoginLockout(positiveInteger('lockoutThreshold', opts.lockoutThreshold, 10)),
    signingKey: await createSigningKey(),
    assertions: new ClientAssertionVerifier(opts.resourceServerJwksUrl),
    counters: { tokenRequests: 0, introspectionRequests: 0, servingSeconds: 0 },
  };

  const requireUser = (username: string) => {
    const user = users.find(username);
    if (user === undefined) throw new Error(`devserver: no user ${username}`);
    return user;
  };

  const createAppPassword = (username: string, o: AppPasswordOptions = {}): { id: string; password: string } => {
    const user = requireUser(username);
    const now = Date.now();
    const { id, secret } = ctx.tokens.create(
      {
        kind: 'app_password',
        tokenType: o.tokenType ?? APP_PASSWORD_TOKEN_TYPE,
        sub: user.sub,
        scope: o.scope ?? user.permissions.join(' '),
        audience: o.audience ?? ctx.audience,
        clientId: undefined,
        expiresAt: o.expiresInSeconds === undefined ? undefined : now + o.expiresInSeconds * 1000,
      },
      now,
    );
    return { id, password: secret };
  };

  const stats = (): DevStats => ({ ...ctx.counters, ...ctx.lockout.snapshot() });

  const unblock = (username: string): void => {
    const user = users.find(username);
    const logins = [username, user?.username, user?.email].filter((l): l is string => l !== undefined && l !== '');
    ctx.lockout.unblock(logins);
  };

  const app = buildDevApp(ctx, { createAppPassword, stats, unblock }, opts.logger ?? false);
  await app.listen({ host, port });
  const address = app.server.address() as AddressInfo;
  const url = `http://${urlHost(host)}:${address.port}`;
  ctx.issuer = `${url}/`;

  const firstClientId = clients.keys().next().value ?? 'credgate-dev';

  return Object.freeze({
    issuer: ctx.issuer,
    url,
    signingKey: Object.freeze({
      privateKey: ctx.signingKey.privateKey,
      publicJwk: ctx.signingKey.publicJwk,
      kid: ctx.signingKey.kid,
    }),
    setResourceServerJwksUrl: (jwksUrl: string) => ctx.assertions.setJwksUrl(jwksUrl),
    addUser: (u: DevUser) => users.add(u),
    createAppPassword,
    revokeAppPassword: (id: string) => {
      ctx.tokens.revoke(id);
    },
    issueAccessToken: async (username: string, o: AccessTokenOptions = {}) => {
      const user = requireUser(username);
      return signAccessToken(ctx.signingKey, {
        issuer: ctx.issuer,
        user,
        audience: o.audience ?? ctx.audience,
        clientId: firstClientId,
        grant: grantScopes(o.scope, user.permissions),
        expiresInSeconds: o.expiresInSeconds ?? ctx.accessTokenTtlSeconds,
        ...(o.extraClaims === undefined ? {} : { extraClaims: o.extraClaims }),
      });
    },
    stats,
    unblock,
    close: () => app.close(),
  });
}
