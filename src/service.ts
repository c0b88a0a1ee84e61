import { readFileSync } from 'node:fs';
import { envName } from './config/load.js';
import type { Config } from './config/schema.js';
import { ConfigError } from './errors.js';
import { Health } from './health.js';
import type { Logger } from './log.js';
import { Metrics } from './metrics/registry.js';
import { AccessTokenVerifier } from './upstream/accessToken.js';
import { loadClientKeys, type ClientKeys } from './upstream/clientKeys.js';
import { deadlineIn, within } from './upstream/deadline.js';
import { UpstreamHttp } from './upstream/http.js';
import { Introspection } from './upstream/introspection.js';
import { AuthorizationServerMetadata } from './upstream/metadata.js';
import { PasswordGrant } from './upstream/passwordGrant.js';
import { CredentialCache } from './verify/cache.js';
import { StaleIdentities } from './verify/staleIdentities.js';
import { Throttle } from './verify/throttle.js';
import { AppPasswordStrategy } from './verify/strategies/appPassword.js';
import { JwtAccessTokenStrategy } from './verify/strategies/jwtAccessToken.js';
import { PasswordGrantStrategy } from './verify/strategies/passwordGrant.js';
import { Verifier } from './verify/verifier.js';
import { TrustedProxies } from './http/originalRequest.js';
import { PolicyStore } from './policy/store.js';
import { startSharedState, type SharedState } from './state/sharedState.js';

export const VERSION: string = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** Configuration with an authorization server (dev mode fills these in before calling). */
export type ServiceConfig = Config & { issuer: string; audience: string; clientId: string; clientSecret: string };

/**
 * What a running service needs beyond the schema: an AS to ask, and a way to authenticate at its
 * introspection endpoint (a key file or secret; dev mode and tests hand in an in-memory key).
 */
export function requireServiceConfig(config: Config, options: { inMemoryKeys?: boolean } = {}): ServiceConfig {
  for (const key of ['issuer', 'audience', 'clientId', 'clientSecret'] as const) {
    if (config[key] === undefined) throw new ConfigError(`invalid configuration: ${key} (${envName(key)}) is required`, key);
  }
  if (!options.inMemoryKeys && config.introspectionKeyFile === undefined && config.introspectionClientSecret === undefined) {
    throw new ConfigError(
      'invalid configuration: introspectionKeyFile (CREDGATE_INTROSPECTION_KEY_FILE) or introspectionClientSecret (CREDGATE_INTROSPECTION_CLIENT_SECRET) is required: app-specific passwords need introspection',
      'introspectionKeyFile',
    );
  }
  return config as ServiceConfig;
}

/** Everything a running credgate holds, wired once; the HTTP layer and the CLI use it alike. */
export interface Service {
  readonly config: ServiceConfig;
  readonly verifier: Verifier;
  readonly keys: ClientKeys | undefined;
  readonly health: Health;
  readonly metrics: Metrics;
  readonly introspection: Introspection;
  readonly log: Logger;
  /** The access policy; undefined without `policyFile`. */
  readonly policy: PolicyStore | undefined;
  readonly trust: TrustedProxies;
  /** Whether `audience` is one credgate verifies for: the configured one or one the policy names. */
  servesAudience(audience: string): boolean;
  /**
   * Drops every cached decision of one user (admin purge) here and, with `redisUrl`, in every replica.
   * `broadcast` (only with `redisUrl`): whether the other replicas were told now; if not, they are once Redis is back.
   */
  purge(username: string): Promise<{ purged: number; broadcast?: boolean }>;
  /** Discovery and JWKS now, so the first request does not pay for them; failures are retried later. */
  warmUp(): Promise<void>;
  close(): Promise<void>;
}

export async function createService(config: ServiceConfig, log: Logger, options: { keys?: ClientKeys } = {}): Promise<Service> {
  const keys = options.keys ?? (config.introspectionKeyFile ? await loadClientKeys(config.introspectionKeyFile, config.publishedKeyFiles) : undefined);
  const metrics = new Metrics(VERSION);
  const policy =
    config.policyFile === undefined
      ? undefined
      : new PolicyStore(config.policyFile, log, {
          onReload: (result) => {
            metrics.policyReloads.inc({ result });
            metrics.policyLastReloadSuccessful.set(result === 'success' ? 1 : 0);
          },
        });
  // Without a policy file the gauge would read 0 ("failed"): it is not exposed at all.
  if (policy) metrics.policyLastReloadSuccessful.set(1);
  else metrics.registry.removeSingleMetric('credgate_policy_last_reload_successful');
  let health: Health | undefined;
  const http = new UpstreamHttp({
    timeoutMs: config.upstreamTimeoutMs,
    connectTimeoutMs: config.upstreamConnectTimeoutMs,
    guard: {
      retries: config.upstreamRetries,
      breakerFailureThreshold: config.breakerFailureThreshold,
      breakerHalfOpenAfterMs: config.breakerHalfOpenAfterMs,
      maxConcurrent: config.maxConcurrentUpstream,
      maxQueued: config.maxQueuedUpstream,
      onCircuitChange: (endpoint, state, lastFailure) => {
        metrics.upstreamCircuitState.set({ endpoint }, state);
        if (state === 2) log.warn({ endpoint, lastFailure, halfOpenAfterMs: config.breakerHalfOpenAfterMs }, `circuit open: ${endpoint} calls refused at once (503) until a probe succeeds`);
        else log.info({ endpoint }, state === 1 ? `circuit half-open: probing ${endpoint}` : `circuit closed: ${endpoint} answers again`);
      },
      onRetry: (endpoint, failure) => {
        metrics.upstreamRetries.inc({ endpoint });
        log.debug({ endpoint, failure }, `retrying ${endpoint}`);
      },
      onRejected: (endpoint, cause) => metrics.upstreamRejections.inc({ endpoint, cause }),
    },
    observe: (endpoint, outcome, seconds) => {
      metrics.observeUpstream(endpoint, outcome, seconds);
      if (outcome === 'ok') health?.reportOk(endpoint);
    },
  });
  metrics.trackUpstreamInFlight(() => http.guard.inFlight);
  const metadata = new AuthorizationServerMetadata(config, http);
  const accessTokens = new AccessTokenVerifier(config, metadata, http);
  let shared: SharedState | undefined;
  health = new Health({
    metadataLoaded: () => metadata.current !== undefined,
    jwksLoaded: () => accessTokens.loaded,
    circuits: () => http.guard.circuits(),
    sharedState: config.redisUrl === undefined ? undefined : () => shared?.status() ?? { ok: false, detail: 'not started' },
  });
  const introspection = new Introspection(config, keys, metadata, http);
  const grant = new PasswordGrant(config, metadata, http);
  const cache = new CredentialCache({
    ttlSeconds: config.cacheTtlSeconds,
    negativeTtlSeconds: config.negativeCacheTtlSeconds,
    maxEntries: config.cacheMaxEntries,
    keySecret: config.cacheKeySecret,
    appPasswordMemorySeconds: config.appPasswordMemorySeconds,
    onEvict: () => metrics.cacheEvictions.inc(),
  });
  const throttle = new Throttle({
    usernameFailures: config.throttleUsernameFailures,
    ipFailures: config.throttleIpFailures,
    windowSeconds: config.throttleWindowSeconds,
    baseDelaySeconds: config.throttleBaseDelaySeconds,
  });
  metrics.trackCacheSize(() => cache.size);
  if (config.redisUrl !== undefined) shared = await startSharedState({ ...config, redisUrl: config.redisUrl }, { cache, throttle, log, metrics });
  const verifier = new Verifier(
    {
      passwordGrant: new PasswordGrantStrategy(grant, accessTokens, introspection, log),
      appPassword: new AppPasswordStrategy(config, introspection, metadata),
      jwt: new JwtAccessTokenStrategy(config, accessTokens),
    },
    cache,
    shared?.throttle ?? throttle,
    {
      defaultAudience: config.audience,
      strategyOrder: config.strategyOrder,
      appPasswordPattern: config.appPasswordPattern === '' ? undefined : new RegExp(config.appPasswordPattern, 'u'),
      tokenUsernames: new Set(config.tokenUsernames.map((u) => u.toLowerCase())),
      decisionTimeoutMs: config.decisionTimeoutMs,
      staleIdentities: config.staleIfErrorSeconds > 0 ? new StaleIdentities(config.staleIfErrorSeconds, config.cacheMaxEntries) : undefined,
    },
    metrics,
    health,
    log,
    shared?.memory,
  );
  return {
    config,
    verifier,
    keys,
    health,
    metrics,
    introspection,
    log,
    policy,
    trust: new TrustedProxies(config.trustedProxies, log),
    servesAudience: (audience) => audience === config.audience || (policy?.current.audiences.has(audience) ?? false),
    async purge(username) {
      const purged = verifier.purgeUser(username);
      if (!shared) return { purged };
      return { purged, broadcast: await shared.memory.purge(username) };
    },
    async warmUp() {
      try {
        // Bounded like a decision, so that retries against a silent AS cannot hold up start-up.
        const deadline = deadlineIn(config.decisionTimeoutMs);
        await within(
          deadline,
          (async () => {
            await metadata.get(deadline);
            await accessTokens.warmUp();
          })(),
        ).finally(() => deadline.dispose());
      } catch (err) {
        log.warn({ err: err instanceof Error ? err.message : String(err) }, 'authorization server not reachable yet; will retry on demand');
      }
    },
    async close() {
      policy?.close();
      await Promise.all([http.close(), shared?.close()]);
    },
  };
}
