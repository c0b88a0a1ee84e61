import type { CryptoKey } from 'jose';

/** A demo user of the development authorization server. */
export interface DevUser {
  username: string;
  email?: string;
  password: string;
  /** Default: `'auth0|'` followed by 24 random hex digits, like Auth0's database connection. */
  sub?: string;
  /** Permissions (Auth0 RBAC) the user holds; granted scopes never exceed them. */
  permissions: string[];
  /** Default false. When true, the right password answers 403 `mfa_required`, like Auth0. */
  mfa?: boolean;
}

/** A client (application) allowed to call the token endpoint. */
export interface DevClient {
  clientId: string;
  clientSecret: string;
  /**
   * Default false. When true, the `auth0-forwarded-for` header names the end user's IP for brute-force
   * protection (Auth0's "Trust Token Endpoint IP Header"); otherwise the socket address is used.
   */
  trustForwardedFor?: boolean;
  /** Default `['password', 'http://auth0.com/oauth/grant-type/password-realm']`. */
  grantTypes?: string[];
}

export interface DevServerOptions {
  /** Default `'127.0.0.1'`. */
  host?: string;
  /** Default 0: the system picks a free port. */
  port?: number;
  /** The registered API (resource server) identifier, e.g. `'https://git.example.com'`. */
  audience: string;
  /** Other registered APIs. Default none. */
  extraAudiences?: string[];
  /** Where the resource server's public keys are (credgate's JWKS). Default unset: private_key_jwt fails until set. */
  resourceServerJwksUrl?: string;
  /** Default unset. When set, introspection also accepts client_secret_post/basic with `client_id` = `audience`. */
  resourceServerClientSecret?: string;
  /** Default none (see `defaultDevUsers()`). */
  users?: DevUser[];
  /** Default none. */
  clients?: DevClient[];
  /** Default 3600. */
  accessTokenTtlSeconds?: number;
  /** Default 10 consecutive failed logins per (username, IP), as on Auth0. */
  lockoutThreshold?: number;
  /** Default false. Request bodies are never logged. */
  logger?: boolean;
}

export interface AppPasswordOptions {
  /** Default: the user's permissions joined by a space. */
  scope?: string;
  /** Default: `options.audience`. Any string is accepted, so tests can mint ASPs for a foreign API. */
  audience?: string;
  /** Default: no expiry. Zero or negative values create an already expired ASP (for tests). */
  expiresInSeconds?: number;
  /** Default `'application_specific_password_token'`; tests use `'refresh_token'`. */
  tokenType?: string;
}

export interface AccessTokenOptions {
  /** Default: `options.audience`. */
  audience?: string;
  /** Default: all the user's permissions. */
  scope?: string;
  /** Default: `accessTokenTtlSeconds`. Negative values create an expired token (for tests). */
  expiresInSeconds?: number;
  /** Merged last: they override the standard claims. */
  extraClaims?: Record<string, unknown>;
}

export interface DevStats {
  tokenRequests: number;
  /** Consecutive failures per `'username|ip'` (username lower-cased as typed). */
  failedLogins: Record<string, number>;
  /** Blocked `'username|ip'` pairs. */
  blocked: string[];
  introspectionRequests: number;
  /**
   * Wall time spent answering every route but the `/dev` admin API, seconds, summed over requests:
   * for each, from fastify's start on it (routed, before `onRequest`) to its last byte handed to the
   * socket (`reply.elapsedTime` at `onResponse`). Benchmarks take its change around one sequential
   * request to a caller as the AS's share of that request's latency (`npm run bench`, figure 7).
   */
  servingSeconds: number;
}

export interface DevAuthorizationServer {
  /** `'http://127.0.0.1:PORT/'`, with the trailing slash, like Auth0. */
  readonly issuer: string;
  /** The issuer without the trailing slash. */
  readonly url: string;
  setResourceServerJwksUrl(url: string): void;
  addUser(u: DevUser): DevUser & { sub: string };
  createAppPassword(username: string, o?: AppPasswordOptions): { id: string; password: string };
  revokeAppPassword(id: string): void;
  /** An RS256 JWT, the same as the token endpoint would give. */
  issueAccessToken(username: string, o?: AccessTokenOptions): Promise<string>;
  /** For tests that forge tokens. */
  readonly signingKey: { privateKey: CryptoKey; publicJwk: Record<string, unknown>; kid: string };
  stats(): DevStats;
  unblock(username: string): void;
  close(): Promise<void>;
}
