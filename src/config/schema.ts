import { z } from 'zod';
import { BlockList, isIP } from 'node:net';
import { getHeapStatistics } from 'node:v8';
import { APP_PASSWORD_TOKEN_TYPE, DEFAULT_SCOPE_CLAIMS, SCOPE_CLAIMS, SCOPE_TOKEN } from '../vocabulary.js';

/** JWS algorithms credgate may accept on access tokens. Symmetric algorithms and `none` are not
 * representable, so no configuration can open the door to `alg: none` or HS256-with-public-key. */
export const ASYMMETRIC_JWS_ALGORITHMS = [
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA',
] as const;

const url = z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' });
const list = z.array(z.string().min(1)).min(1, 'must not be empty');

/** `redis.internal:26379`, `10.0.0.5:6379` or `[fd00::5]:6379`: one Redis Sentinel or Cluster node. */
export const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?):\d{1,5}$/, 'must be host:port (an IPv6 address in brackets)')
  .refine((v) => { const port = Number(v.slice(v.lastIndexOf(':') + 1)); return port > 0 && port < 65536; }, 'must have a port from 1 to 65535');

/** `host:port` → `{ host, port }` (brackets of an IPv6 address dropped). */
export function parseHostPort(value: string): { host: string; port: number } {
  const colon = value.lastIndexOf(':');
  return { host: value.slice(0, colon).replace(/^\[|\]$/g, ''), port: Number(value.slice(colon + 1)) };
}

/** The keys that say where the shared Redis is: exactly one of them may be set. */
export const REDIS_TOPOLOGY_KEYS = ['redisUrl', 'redisSentinels', 'redisClusterNodes'] as const;
const ENV_NAMES: Readonly<Record<(typeof REDIS_TOPOLOGY_KEYS)[number], string>> = { redisUrl: 'CREDGATE_REDIS_URL', redisSentinels: 'CREDGATE_REDIS_SENTINELS', redisClusterNodes: 'CREDGATE_REDIS_CLUSTER_NODES' };

const PROXY_KEYWORDS = new Set(['loopback', 'linklocal', 'uniquelocal']);

/** `10.0.0.0/8`, `::1/128` or a bare address. */
export function isCidr(value: string): boolean {
  const [address = '', prefix, ...rest] = value.split('/');
  const family = isIP(address);
  if (family === 0 || rest.length > 0) return false;
  if (prefix === undefined) return true;
  if (!/^\d{1,3}$/.test(prefix)) return false;
  const bits = Number(prefix);
  try {
    new BlockList().addSubnet(address, bits, family === 4 ? 'ipv4' : 'ipv6');
    return true;
  } catch {
    return false;
  }
}

/** `127.0.0.1:143` or `[::1]:143`: nginx's mail proxy wants an IP address in `Auth-Server`. */
const ipPort = z
  .string()
  .regex(/^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]):\d{1,5}$/, 'must be IP:port (an IP address: nginx does not resolve Auth-Server names)')
  .refine((v) => { const port = Number(v.slice(v.lastIndexOf(':') + 1)); return isIP(v.slice(0, v.lastIndexOf(':')).replace(/^\[|\]$/g, '')) !== 0 && port > 0 && port < 65536; }, 'must be a valid IP address and port');

/**
 * The whole configuration. Every key can come from the YAML file (camelCase, as below) or from
 * an environment variable (`CREDGATE_` + the key in SCREAMING_SNAKE_CASE; lists comma-separated;
 * `HOST` and `PORT` without prefix). Environment wins.
 *
 * Each key's documentation is its `description` (`.describe()`, or `.meta()` with `defaultText` for
 * a default the schema cannot show and `requiredWhen` for a conditional requirement):
 * docs/configuration.md is generated from them by `npm run docs` (src/config/reference.ts).
 */
export const configSchema = z
  .object({
    issuer: url.optional().meta({
      description: "Issuer URL of the authorization server. Endpoints come from its `/.well-known/openid-configuration`, falling back to Auth0's paths under the issuer (`/oauth/token`, `/oauth/introspect`, `/.well-known/jwks.json`). Required by `credgate serve`, which exits 2 without it; `credgate dev` embeds its own.",
      requiredWhen: 'by `credgate serve`',
    }),
    audience: z.string().min(1).optional().meta({
      description: 'API identifier tokens must be issued for; sent as `audience` in the password grant and enforced on every token. Required with `issuer`. Dev mode: `https://api.credgate.dev` unless set.',
      requiredWhen: 'with `issuer`',
    }),
    clientId: z.string().min(1).optional().meta({ description: 'Client used for the password grant. Required with `issuer`.', requiredWhen: 'with `issuer`' }),
    clientSecret: z.string().min(1).optional().meta({ description: 'Secret of `clientId`. Required with `issuer`.', requiredWhen: 'with `issuer`' }),
    tokenAuthMethod: z.enum(['client_secret_post', 'client_secret_basic']).default('client_secret_post').describe('How the password-grant client authenticates. Default `client_secret_post` (Auth0).'),
    passwordGrantScope: z.string().min(1).optional().describe('`scope` sent with the password grant (e.g. `openid read:repo`). Default: none (the AS grants the API\'s default).'),
    tokenUrl: url.optional().meta({
      description: "Token endpoint override; default: discovery, then Auth0's path under the issuer (`/oauth/token`). With `tokenUrl`, `introspectionUrl` and `jwksUrl` all set, no discovery request is made at all.",
      defaultText: 'discovery',
    }),
    introspectionUrl: url.optional().meta({ description: "Introspection endpoint override; default: discovery, then Auth0's path under the issuer (`/oauth/introspect`).", defaultText: 'discovery' }),
    jwksUrl: url.optional().meta({ description: "JWKS endpoint override; default: discovery, then Auth0's path under the issuer (`/.well-known/jwks.json`).", defaultText: 'discovery' }),
    introspectionClientId: z.string().min(1).optional().meta({
      description: "`iss`/`sub` of the introspection client assertion. Default: `audience` (Auth0 looks up the resource server's key by it).",
      defaultText: '`audience`',
    }),
    introspectionKeyFile: z.string().min(1).optional().describe(
      'PEM PKCS#8 private key (RSA, P-256/384/521 or Ed25519): authenticate introspection with private_key_jwt. RSA keys (at least 2048 bits) sign RS256, P-256/384/521 ES256/384/512, Ed25519 EdDSA. ' +
        '`credgate serve` needs this or `introspectionClientSecret`: app-specific passwords need introspection.',
    ),
    publishedKeyFiles: z.array(z.string().min(1)).default([]).describe('PEM public or private keys published (public part only) at /.well-known/jwks.json beside the signing key (rotation: the next or the previous key).'),
    introspectionClientSecret: z.string().min(1).optional().describe('Otherwise authenticate introspection with this client secret (client_secret_post). Set this or `introspectionKeyFile`, not both.'),
    acceptedTokenTypes: list.default([APP_PASSWORD_TOKEN_TYPE, 'Bearer', 'access_token']).describe('Introspection `token_type` values accepted as a password. A missing type and `refresh_token` are always refused.'),
    usernameClaims: list.default(['username', 'email']).describe(
      'Introspection/JWT claims that name the account, first present wins: the username credgate reports (X-Auth-User, ' +
        'mail Auth-User) and the name a token sent with a Basic username must match (exactly, ASCII letters case-insensitively).',
    ),
    scopeClaims: z.array(z.enum(SCOPE_CLAIMS)).min(1).default([...DEFAULT_SCOPE_CLAIMS]).describe(
      "Claims a token's granted scopes are read from. Default `scope`, `scp`. Auth0's `permissions` lists every permission " +
        'the user holds, whatever the token was narrowed to: add it only if your API never narrows tokens by scope.',
    ),
    jwtAlgorithms: z.array(z.enum(ASYMMETRIC_JWS_ALGORITHMS)).min(1).default(['RS256', 'PS256', 'ES256', 'EdDSA']).describe('Algorithms accepted on JWT access tokens (asymmetric only: `none` and `HS*` cannot be named).'),
    clockToleranceSeconds: z.coerce.number().int().min(0).max(300).default(30).describe('Clock tolerance for `exp`/`nbf`/`iat`, seconds. Default 30.'),
    upstreamTimeoutMs: z.coerce.number().int().min(50).max(60_000).default(3000).describe(
      'Time limit for each call to the authorization server (connect, headers and the whole body), milliseconds. ' +
        'Default 3000. Cut shorter when less is left of `decisionTimeoutMs`.',
    ),
    upstreamConnectTimeoutMs: z.coerce.number().int().min(50).max(60_000).default(1500).describe(
      'Time limit for opening a connection (TCP and TLS) to the authorization server, milliseconds; at most ' +
        '`upstreamTimeoutMs`. Default 1500. A connect that times out never sent anything, so even a password grant is retried.',
    ),
    decisionTimeoutMs: z.coerce.number().int().min(100).max(60_000).default(5000).describe(
      'Longest credgate takes to decide, milliseconds, all calls to the AS and retries included; past it the answer is ' +
        "503 `upstream_unavailable` (or a stale identity, see `staleIfErrorSeconds`). Default 5000. Keep it below the proxy's " +
        'own timeout for the auth request: nginx `proxy_read_timeout` (60 s), Traefik/Caddy (none by default), and ' +
        'Envoy ext_authz, whose default of 200 ms must be raised (e.g. `timeout: 6s`).',
    ),
    upstreamRetries: z.coerce.number().int().min(0).max(5).default(2).describe(
      'Further attempts after a failed call, where a retry is safe: discovery, JWKS and introspection after a network ' +
        'failure, a timeout or a 5xx; the password grant only when the request surely never reached the AS (connection ' +
        "refused, DNS failure, connect timeout). Jittered back-off (50–400 ms); never past the decision's deadline. " +
        'Default 2; 0: no retries.',
    ),
    breakerFailureThreshold: z.coerce.number().int().min(0).max(1000).default(5).describe(
      'Consecutive failures of one AS endpoint (no answer, 5xx, 429, garbage) that open its circuit: while open, calls ' +
        'to it are refused at once (503 `upstream_unavailable`, never an allow) instead of waiting for timeouts. ' +
        'A 4xx the AS chose to send does not count. Default 5; 0: no circuit breaker.',
    ),
    breakerHalfOpenAfterMs: z.coerce.number().int().min(100).max(600_000).default(5000).describe(
      "How long an open circuit refuses calls before it lets one probe through (half-open); the probe's success closes " +
        'it, its failure opens it again. Milliseconds, default 5000: recovery within seconds once the AS is back.',
    ),
    maxConcurrentUpstream: z.coerce.number().int().min(1).max(10_000).default(64).describe('Most calls to the AS under way at once (all endpoints together). Default 64.'),
    maxQueuedUpstream: z.coerce.number().int().min(0).max(100_000).default(256).describe(
      "Calls that may wait for one of those slots, each at most until its decision's deadline (a short burst is absorbed); " +
        'a decision needing a call beyond them is answered 503 at once. Default 256; 0: no waiting.',
    ),
    staleIfErrorSeconds: z.coerce.number().int().min(0).max(86_400).default(0).describe(
      'Stale-if-error: when the AS cannot be asked, a credential whose verified identity left the cache less than this ' +
        "many seconds ago is still allowed (scopes still checked; never past the credential's own `exp`; never after the AS " +
        'denied it; not after a purge). Default 0: off. RISK: a revoked ASP or changed password keeps working through an AS outage for up to ' +
        '`cacheTtlSeconds + staleIfErrorSeconds`.',
    ),
    maxEventLoopDelayMs: z.coerce.number().int().min(0).max(60_000).default(1000).describe(
      'Event-loop delay (mean over one second), milliseconds, beyond which requests are answered 503 at once (each interface in its own terms) rather than ' +
        'queued until they time out; `/readyz` fails meanwhile. `/healthz` and `/metrics` are always answered. Default 1000; 0: off.',
    ),
    maxHeapUsedBytes: z.coerce.number().int().min(0).default(() => Math.floor(getHeapStatistics().heap_size_limit * 0.9)).meta({
      description: "Heap in use, bytes, beyond which requests are answered 503 at once (as `maxEventLoopDelayMs`). Default 90 % of V8's heap limit (`--max-old-space-size`); 0: off.",
      defaultText: "90 % of V8's heap limit",
    }),
    clientTimeoutMs: z.coerce.number().int().min(100).max(300_000).default(10_000).describe(
      "Time a client has to send a request's headers and body, milliseconds (slow clients are cut off); an idle socket is closed after three times this. Default 10000.",
    ),
    keepAliveTimeoutMs: z.coerce.number().int().min(0).max(600_000).default(65_000).describe(
      'How long an idle keep-alive connection from a client (the proxy) stays open, milliseconds. Default 65000: longer ' +
        "than nginx's and most load balancers' 60 s, so that the proxy, not credgate, closes idle connections.",
    ),
    shutdownDelayMs: z.coerce.number().int().min(0).max(120_000).default(0).describe(
      'On SIGTERM/SIGINT, how long to go on serving (with `/readyz` failing and `Connection: close` on every answer) ' +
        'before the listeners close, milliseconds, so that load balancers and Kubernetes endpoints stop sending new requests ' +
        'first. Default 0; behind Kubernetes use ~5000.',
    ),
    shutdownTimeoutMs: z.coerce.number().int().min(1000).max(300_000).default(10_000).describe(
      'After the listeners close, how long in-flight decisions get to finish before the process exits anyway (code 1), ' +
        'milliseconds. Default 10000; must exceed `decisionTimeoutMs`.',
    ),
    allowInsecureHttp: z.stringbool().or(z.boolean()).default(false).describe('Permit `http://` endpoints that are not on loopback. Default false: TLS is required off-box. Never in production.'),
    cacheTtlSeconds: z.coerce.number().int().min(0).max(86_400).default(300).describe(
      "Longest a verified identity is reused without asking the AS again, seconds; never beyond the token's `exp`. " +
        'This is the revocation latency: a revoked ASP or changed password keeps working this long (unless purged). 0 disables.',
    ),
    negativeCacheTtlSeconds: z.coerce.number().int().min(0).max(3600).default(5).describe('How long a wrong credential is answered from memory, seconds. Short: it only absorbs retry storms. 0 disables.'),
    cacheMaxEntries: z.coerce.number().int().min(1).max(10_000_000).default(100_000).describe('Most cached credentials (positive and negative together); the least recently used go first.'),
    cacheKeySecret: z.string().min(43, 'must be at least 32 bytes of base64 (43 characters) or hex (64)').optional().meta({
      description: 'Key for the HMAC that names cache entries (≥ 32 bytes, base64 or hex); default: random per process. Replicas sharing state must share it.',
      defaultText: 'random per process',
    }),
    strategyOrder: z.array(z.enum(['password_grant', 'app_password'])).min(1).refine((a) => new Set(a).size === a.length, 'must not repeat a strategy').default(['password_grant', 'app_password']).describe('Order of the Basic-password strategies for a credential not recognised as an ASP.'),
    appPasswordPattern: z
      .string()
      .max(500)
      .refine((p) => { try { new RegExp(p); return true; } catch { return false; } }, 'must be a valid regular expression')
      .default('^[A-Za-z0-9_~+/.=-]{32,}$')
      .describe(
        'A password matching this (JavaScript) regular expression is introspected first, so using an ASP never counts as a ' +
          'failed login at the AS. Default: 32 or more characters from the base64/base64url alphabet (long random tokens). ' +
          'A user password that matches costs one extra introspection call until it has succeeded once; from then on it goes to the password grant first. Empty string: off.',
      ),
    appPasswordMemorySeconds: z.coerce.number().int().min(0).max(90 * 86_400).default(30 * 86_400).describe(
      'How long credgate remembers (by HMAC) that a credential turned out to be an ASP, so it is introspected first, and that a password succeeded (a known-good password keeps a login slot while the budget is spent). Seconds.',
    ),
    forwardClientIp: z.stringbool().or(z.boolean()).default(false).describe(
      "Send the end-user's IP to Auth0 as `auth0-forwarded-for` (Auth0 honours it only for trusted confidential clients; " +
        'enable only then). Default false.',
    ),
    passwordFailureBudget: z.coerce.number().int().refine((n) => n === 0 || (n >= 3 && n <= 1000), 'must be 0 (off) or 3 to 1000').default(5).describe(
      'Login protection: the AS never sees this many consecutive failed password grants for one account caused by ' +
        'credgate, under any concurrency or pacing (see docs/security.md). Passwords not known to be good are sent ' +
        'while fewer than budget − 2 failures (and grants under way) stand; one known to have succeeded before while fewer ' +
        "than budget − 1. Keep it below your AS's lockout threshold, and below half of it where accounts log in by two " +
        'names (Auth0 blocks at 10). Default 5. 0 turns login protection off (only for an AS without lockout); otherwise 3 to 1000.',
    ),
    passwordFailureMemorySeconds: z.coerce
      .number()
      .int()
      .refine((n) => n === 0 || (n >= 60 && n <= 366 * 86_400), 'must be 0 (never forget) or 60 to 31622400 seconds')
      .default(30 * 86_400)
      .describe(
        "How long an account's failures are remembered without a success, seconds after its last failure: no less than " +
          'your AS keeps them (Auth0: until a success, a reset, or 30 days). Default 30 days. 0: never forgotten, only a ' +
          'success or an admin reset (`credgate purge`) clears them. Use 0 for an AS that never forgets, and where accounts ' +
          'log in by two names that credgate may not have linked yet (docs/security.md): the price is that a new password ' +
          'of an attacked account stays throttled until the user logs in with a known-good password or an admin resets it.',
      ),
    ledgerFile: z.string().min(1).optional().describe(
      "File where a replica without Redis keeps its login-protection ledger across restarts and crashes (one JSON line per " +
        "change, written before the grant it reserves is sent, and which login names belong to one account; compacted at start-up; " +
        'mode 0600; login names and subjects, never passwords). ' +
        "Without it (and without `redisUrl`) each restart gives an attacker another budget − 2 guesses per account. " +
        'Give every replica its own file; replicas share a ledger only through Redis.',
    ),
    ledgerMaxAccounts: z.coerce.number().int().min(1000).max(10_000_000).default(1_000_000).describe('Most accounts (login names) login protection tracks at once; beyond it the least recently failed are forgotten.'),
    throttleIpFailures: z.coerce.number().int().min(0).max(100_000).default(30).describe(
      'Failed logins per end-user IP (IPv6: per `throttleIpv6PrefixBits` prefix) within `throttleWindowSeconds` before ' +
        'that address is throttled, across all usernames. 0 disables.',
    ),
    throttleIpv6PrefixBits: z.coerce.number().int().min(32).max(128).default(64).describe('IPv6 addresses are counted by this prefix: one subscriber holds a /64 or more. Default 64.'),
    throttleWindowSeconds: z.coerce.number().int().min(1).max(86_400).default(900).describe('Sliding window for per-IP failure counting, seconds.'),
    throttleBaseDelaySeconds: z.coerce.number().int().min(1).max(3600).default(30).describe('First per-IP back-off once the limit is hit, seconds; doubles with every further failure, capped by the window.'),
    authThrottledStatus: z.union([z.literal(401), z.literal(429), z.enum(['401', '429']).transform(Number)]).default(401).describe('Status `/auth` answers for `throttled`: 401 (nginx `auth_request` passes only 401/403) or 429.'),
    policyFile: z.string().min(1).optional().describe(
      'The access policy (YAML, see docs/policy.md). Unset: every valid credential for `audience` is allowed, subject only to ' +
        'scopes pinned by `?scope=` or the `scopes` field. Reloaded on change and on SIGHUP; an invalid new file is refused.',
    ),
    trustedProxies: z.array(z.string().refine((v) => PROXY_KEYWORDS.has(v) || isCidr(v), 'must be an IP address, a CIDR range (e.g. 10.0.0.0/8, ::1) or loopback/linklocal/uniquelocal')).default([]).describe(
      'Peers (IP addresses or CIDR ranges) whose forwarded headers are believed: `X-Original-*`, `X-Forwarded-*`, ' +
        '`X-Real-IP`. Also `loopback`, `linklocal`, `uniquelocal` (those ranges, IPv4 and IPv6). Default none: forwarded ' +
        'headers are ignored. Once set, any other peer is taken to be the end user itself. Dev mode: `loopback`.',
    ),
    tokenUsernames: z.array(z.string().min(1).max(64)).default(['x-access-token', 'oauth2', 'x-oauth-basic']).describe(
      'Basic usernames that mean "the password is a token" (GitHub, GitLab): identity from the token alone. Case-insensitive. `[]` in YAML turns it off.',
    ),
    mailImapBackend: ipPort.optional().describe('nginx mail proxy IMAP backend (`/auth/mail`), `IP:port` (`[::1]:143` for IPv6); nginx needs an IP address. Unset: IMAP logins are refused.'),
    mailPop3Backend: ipPort.optional().describe('nginx mail proxy POP3 backend (`/auth/mail`), `IP:port`; nginx needs an IP address. Unset: POP3 logins are refused.'),
    mailSmtpBackend: ipPort.optional().describe('nginx mail proxy SMTP backend (`/auth/mail`), `IP:port`; nginx needs an IP address. Unset: SMTP logins are refused.'),
    mailImapScopes: z.array(z.string().regex(SCOPE_TOKEN)).default(['read:mail']).describe('Scopes IMAP logins need when no policy file is set (with one, rules with `protocol:` decide).'),
    mailPop3Scopes: z.array(z.string().regex(SCOPE_TOKEN)).default(['read:mail']).describe('Scopes POP3 logins need when no policy file is set (with one, rules with `protocol:` decide).'),
    mailSmtpScopes: z.array(z.string().regex(SCOPE_TOKEN)).default(['send:mail']).describe('Scopes SMTP logins need when no policy file is set (with one, rules with `protocol:` decide).'),
    mailMaxAttempts: z.coerce.number().int().min(1).max(20).default(3).describe('Login attempts per mail connection after which nginx is told not to retry (no `Auth-Wait`: it closes the connection).'),
    mailWaitSeconds: z.coerce.number().int().min(0).max(60).default(3).describe(
      "`Auth-Wait` for the first failed attempt, seconds; it doubles with each further attempt and is at least the throttle's " +
        'retry-after and at least 1 (nginx reads 0 as "close"); a wait over 300 s closes the connection instead.',
    ),
    mailBackendPassword: z.string().min(16, 'must be at least 16 characters').regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces (nginx receives it in a header)').optional().describe(
      'Sent back as `Auth-Pass` on success so the backend receives this shared secret instead of the user\'s password. ' +
        "Printable ASCII, at least 16 characters, no spaces. Handed only to peers in `trustedProxies`. Unset: the user's password is passed through.",
    ),
    mailSmtpErrorCode: z.string().regex(/^[45]\d\d [45]\.\d{1,3}\.\d{1,3}$/, 'must look like "535 5.7.8"').default('535 5.7.8').describe('`Auth-Error-Code` for a refused SMTP login (RFC 4954 §6 / RFC 3463).'),
    redisUrl: z.url({ protocol: /^rediss?$/, error: 'must be a redis:// or rediss:// URL' }).optional().describe(
      'Redis shared by several replicas (`redis://[user:password@]host:port[/db]`, `rediss://` for TLS): the login ledger, per-IP ' +
        'failure counters, known-wrong credentials, "this credential is an ASP" and "this password succeeded" markers, and purges. ' +
        'Positive decisions stay in each process. Unset: every process keeps its own state. Needs `cacheKeySecret` (the same in ' +
        'every replica). Never logged. See docs/deployment.md "Several replicas".',
    ),
    redisSentinels: z.array(hostPort).min(1, 'must not be empty').optional().describe(
      'Redis Sentinel instead of `redisUrl`: the sentinels (`host:port`, comma-separated in the environment; list them all) ' +
        'that know the primary named `redisSentinelName`. credgate asks them for the current primary, and again after every ' +
        'disconnect and every failover they announce. Set one of `redisUrl`, `redisSentinels`, `redisClusterNodes`. See ' +
        'docs/operations.md "Redis high availability".',
    ),
    redisSentinelName: z.string().min(1).max(200).optional().meta({
      description: 'Name of the primary the sentinels monitor (`sentinel monitor <name> …`). Required with `redisSentinels`.',
      requiredWhen: 'with `redisSentinels`',
    }),
    redisSentinelUsername: z.string().min(1).optional().describe('ACL user credgate authenticates as to the sentinels themselves (not to the data nodes). Only with `redisSentinels`.'),
    redisSentinelPassword: z.string().min(1).optional().describe('Password of the sentinels themselves (their `requirepass`), not of the data nodes. Only with `redisSentinels`. Never logged.'),
    redisClusterNodes: z.array(hostPort).min(1, 'must not be empty').optional().describe(
      'Redis Cluster instead of `redisUrl`: some of its nodes (`host:port`, comma-separated in the environment); the rest ' +
        'are discovered. The login ledger\'s keys share one hash tag (`{<redisKeyPrefix>ledger}`), so its scripts run on one ' +
        'node; the other keys spread over the cluster. Set one of `redisUrl`, `redisSentinels`, `redisClusterNodes`.',
    ),
    redisUsername: z.string().min(1).optional().describe('ACL user of the Redis data nodes with `redisSentinels` or `redisClusterNodes` (with `redisUrl` it goes in the URL).'),
    redisPassword: z.string().min(1).optional().describe('Password of the Redis data nodes with `redisSentinels` or `redisClusterNodes` (with `redisUrl` it goes in the URL). Never logged.'),
    redisMinReplicas: z.coerce.number().int().min(0).max(16).default(0).describe(
      'Replicas that must acknowledge every login-ledger write (`WAIT`, bounded by `redisTimeoutMs`) before it counts: ' +
        'otherwise the write is treated as Redis being unreachable, so a password not known to be good is not sent (503). ' +
        'With 1 or more, a failover cannot lose a failed login the budget already counted. Default 0: not waited for ' +
        '(a failover may forget the last writes the old primary had not yet passed on).',
    ),
    redisKeyPrefix: z.string().min(1).max(64).regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces').default('credgate:').describe('Prefix of every Redis key and of the purge channel, so that several credgate deployments can share one Redis.'),
    redisTimeoutMs: z.coerce.number().int().min(5).max(5000).default(100).describe('Longest a decision waits for Redis, milliseconds; past it (or with Redis down) the local state decides. After a timeout Redis is skipped for 2 s.'),
    adminToken: z.string().min(32, 'must be at least 32 characters').optional().describe('Bearer token for the admin API (`POST /admin/purge`), at least 32 characters; unset: the admin API is off.'),
    adminPort: z.coerce.number().int().min(0).max(65535).optional().describe("Serve the admin API on this port (bound to loopback) instead of on the main listener's loopback connections."),
    realm: z.string().min(1).max(100).regex(/^[\x20-\x21\x23-\x5b\x5d-\x7e]+$/, 'printable ASCII without " or \\').default('credgate').describe('Realm in `WWW-Authenticate: Basic realm="…"`.'),
    host: z.string().min(1).optional().meta({ description: 'Listen address. Default `0.0.0.0`, dev mode `127.0.0.1` (dev mode refuses any address but loopback).', defaultText: '`0.0.0.0` (dev mode `127.0.0.1`)' }),
    port: z.coerce.number().int().min(0).max(65535).optional().meta({ description: 'Listen port. Default 8080; 0: a free port chosen at start.', defaultText: '`8080`' }),
    metricsPort: z.coerce.number().int().min(0).max(65535).optional().describe('Serve `/metrics` on this port instead of the main one (then only there).'),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info').describe('pino level. Default `info`.'),
    identityIssuer: z.string().min(1).max(512).optional().describe(
      "`iss` of the signed identity tokens policy rules ask for (`identityToken`): credgate's public URL, as downstream " +
        'services will check it. Unset: a policy that asks for identity tokens is refused.',
    ),
    identityKeyFile: z.string().min(1).optional().describe(
      'PEM PKCS#8 private key that signs identity tokens (Ed25519 or P-256 recommended; `credgate keygen --use identity`). ' +
        'Its own key, never the introspection client key. Required with `identityIssuer` (dev mode and tests: in memory).',
    ),
    identityPublishedKeyFiles: z.array(z.string().min(1)).default([]).describe(
      'More PEM keys published at /.well-known/jwks.json for identity tokens: the previous key during a rotation, until ' +
        'every token it signed has expired (at most the largest `ttlSeconds` after the switch).',
    ),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.issuer !== undefined) {
      for (const key of ['audience', 'clientId', 'clientSecret'] as const) {
        if (c[key] === undefined) ctx.addIssue({ code: 'custom', path: [key], message: 'is required when issuer is set' });
      }
    }
    if (c.introspectionKeyFile !== undefined && c.introspectionClientSecret !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['introspectionClientSecret'], message: 'set either introspectionKeyFile or introspectionClientSecret, not both' });
    }
    if (c.shutdownTimeoutMs <= c.decisionTimeoutMs) {
      ctx.addIssue({ code: 'custom', path: ['shutdownTimeoutMs'], message: 'must exceed decisionTimeoutMs, so that in-flight decisions can finish' });
    }
    const topology = REDIS_TOPOLOGY_KEYS.filter((key) => c[key] !== undefined);
    if (topology.length > 1) {
      ctx.addIssue({ code: 'custom', path: [topology[1]!], message: `set only one of redisUrl, redisSentinels, redisClusterNodes (here: ${topology.join(' and ')})` });
    }
    const shared = topology[0];
    if (shared !== undefined && c.cacheKeySecret === undefined) {
      // Shared keys are HMACs: with a random per-process key no two replicas would name anything alike.
      ctx.addIssue({ code: 'custom', path: ['cacheKeySecret'], message: `is required when ${shared} (${ENV_NAMES[shared]}) is set: replicas sharing state must name it with the same HMAC key` });
    }
    if (c.redisSentinels !== undefined && c.redisSentinelName === undefined) {
      ctx.addIssue({ code: 'custom', path: ['redisSentinelName'], message: 'is required when redisSentinels is set: the name of the primary the sentinels monitor' });
    }
    for (const key of ['redisSentinelName', 'redisSentinelUsername', 'redisSentinelPassword'] as const) {
      if (c[key] !== undefined && c.redisSentinels === undefined) ctx.addIssue({ code: 'custom', path: [key], message: 'is only used with redisSentinels, which is not set' });
    }
    for (const key of ['redisUsername', 'redisPassword'] as const) {
      if (c[key] === undefined) continue;
      if (c.redisUrl !== undefined) ctx.addIssue({ code: 'custom', path: [key], message: 'is not used with redisUrl: put the credentials in the URL (redis://user:password@host:port)' });
      else if (shared === undefined) ctx.addIssue({ code: 'custom', path: [key], message: 'is only used with redisSentinels or redisClusterNodes, neither of which is set' });
    }
    if (c.redisMinReplicas > 0 && shared === undefined) {
      ctx.addIssue({ code: 'custom', path: ['redisMinReplicas'], message: 'needs a shared Redis (redisUrl, redisSentinels or redisClusterNodes)' });
    }
    if (c.redisClusterNodes !== undefined && /[{}]/.test(c.redisKeyPrefix)) {
      // The ledger's hash tag is made from the prefix; a brace in it would make Redis hash another part of the key.
      ctx.addIssue({ code: 'custom', path: ['redisKeyPrefix'], message: 'must not contain { or } with redisClusterNodes: credgate sets the hash tags itself' });
    }
    if (c.metricsPort !== undefined && c.metricsPort !== 0 && c.metricsPort === c.port) {
      ctx.addIssue({ code: 'custom', path: ['metricsPort'], message: 'must differ from port' });
    }
  });

/** Whether replicas share state through Redis (one of `redisUrl`, `redisSentinels`, `redisClusterNodes` is set). */
export function sharesState(config: Config): boolean {
  return REDIS_TOPOLOGY_KEYS.some((key) => config[key] !== undefined);
}

export type ConfigInput = z.input<typeof configSchema>;
export type Config = Readonly<z.output<typeof configSchema>>;

/** Keys whose value is a list (comma-separated in the environment), read off the schema itself. */
export const LIST_KEYS: ReadonlySet<string> = new Set(
  Object.entries(configSchema.shape)
    .filter(([, field]) => {
      let def = (field as { def: { type: string; innerType?: { def: unknown } } }).def;
      while (def.innerType) def = def.innerType.def as typeof def; // unwrap optional/default
      return def.type === 'array';
    })
    .map(([key]) => key),
);
