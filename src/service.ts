import { readFileSync } from 'node:fs';
import { envName } from './config/load.js';
import { sharesState, type Config } from './config/schema.js';
import { ConfigError } from './errors.js';
import { Health } from './health.js';
import type { Logger } from './log.js';
import { Metrics } from './metrics/registry.js';
import { AccessTokenVerifier } from './upstream/accessToken.js';
import type { JWK } from 'jose';
import { IdentityTokens } from './identity/tokens.js';
import { generateClientKeys, loadClientKeys, type ClientKeys } from './upstream/clientKeys.js';
import { deadlineIn, within } from './upstream/deadline.js';
import { UpstreamHttp } from './upstream/http.js';
import { Introspection } from './upstream/introspection.js';
import { AuthorizationServerMetadata } from './upstream/metadata.js';
import { PasswordGrant } from './upstream/passwordGrant.js';
import { DecisionPipeline } from './decide/pipeline.js';
import { AccountDirectory } from './verify/accounts.js';
import { CredentialCache } from './verify/cache.js';
import { LocalLoginLedger, type LoginLedger } from './verify/loginLedger.js';
import { StaleIdentities } from './verify/staleIdentities.js';
import { Throttle } from './verify/throttle.js';
import { buildStrategies } from './verify/strategies/registry.js';
import { Verifier } from './verify/verifier.js';
import { TrustedProxies } from './decide/trust.js';
import { PolicyStore } from './policy/store.js';
import { LedgerFile } from './state/ledgerFile.js';
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
  if (!options.inMemoryKeys && config.identityIssuer !== undefined && config.identityKeyFile === undefined) {
    throw new ConfigError('invalid configuration: identityKeyFile (CREDGATE_IDENTITY_KEY_FILE) is required with identityIssuer: every replica must sign identity tokens with the same key (credgate keygen --use identity)', 'identityKeyFile');
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
  /** The one decision sequence every interface goes through. */
  readonly pipeline: DecisionPipeline;
  readonly keys: ClientKeys | undefined;
  /** Public keys served at /.well-known/jwks.json: the client-assertion key(s), then the identity-token key(s). */
  readonly jwks: { readonly keys: readonly JWK[] };
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
   * Admin purge of one account, named by a login name or by subject: every cached decision under any
   * of its names (aliases seen with it) and its login-protection ledger, here and, with `redisUrl`, in
   * every replica. `broadcast` (only with `redisUrl`): whether the other replicas were told now.
   */
  purge(account: { username?: string; subject?: string }): Promise<{ purged: number; names: number; broadcast?: boolean }>;
  /** Discovery and JWKS now, so the first request does not pay for them; failures are retried later. */
  warmUp(): Promise<void>;
  close(): Promise<void>;
}

/**
 * The identity-token signing key: `identityKeyFile` (and `identityPublishedKeyFiles` for rotation),
 * else, when `identityIssuer` is set without one (dev mode, tests), a fresh Ed25519 key in memory.
 */
async function identityKeysFor(config: ServiceConfig, log: Logger, given: ClientKeys | undefined): Promise<ClientKeys | undefined> {
  if (given !== undefined) return given;
  if (config.identityKeyFile !== undefined) return loadClientKeys(config.identityKeyFile, config.identityPublishedKeyFiles, { key: 'identityKeyFile', published: 'identityPublishedKeyFiles' });
  if (config.identityIssuer === undefined) return undefined;
  log.warn('identity tokens are signed with a key kept in memory: they stop verifying after a restart and differ between replicas (set identityKeyFile)');
  return generateClientKeys('ed25519');
}

/** `passwordFailureBudget: 0`: every grant is sent (an AS without lockout); aliases are still learnt for purges. */
const UNPROTECTED: LoginLedger = { admit: async () => ({ admitted: true, key: '', id: '', seq: 0, cls: '' }), settle: async () => undefined, reset: async () => undefined, link: async () => undefined };

export async function createService(config: ServiceConfig, log: Logger, options: { keys?: ClientKeys; identityKeys?: ClientKeys } = {}): Promise<Service> {
  const keys = options.keys ?? (config.introspectionKeyFile ? await loadClientKeys(config.introspectionKeyFile, config.publishedKeyFiles) : undefined);
  const identityKeys = await identityKeysFor(config, log, options.identityKeys);
  const identityTokens = identityKeys !== undefined && config.identityIssuer !== undefined ? new IdentityTokens(identityKeys.signing, config.identityIssuer) : undefined;
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
  if (policy?.current.usesIdentityTokens && identityTokens === undefined) {
    throw new ConfigError('invalid configuration: identityIssuer (CREDGATE_IDENTITY_ISSUER) is required: the policy asks for identity tokens', 'identityIssuer');
  }
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
    sharedState: !sharesState(config) ? undefined : () => shared?.status() ?? { ok: false, detail: 'not started' },
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
    ipFailures: config.throttleIpFailures,
    windowSeconds: config.throttleWindowSeconds,
    baseDelaySeconds: config.throttleBaseDelaySeconds,
    ipv6PrefixBits: config.throttleIpv6PrefixBits,
  });
  const accounts = new AccountDirectory(config.ledgerMaxAccounts);
  // A grant still unsettled after the decision's deadline (plus the AS's own timeout) may have reached the AS.
  const ledgerRule = { budget: config.passwordFailureBudget, memoryMs: config.passwordFailureMemorySeconds === 0 ? Infinity : config.passwordFailureMemorySeconds * 1000, reservationMs: config.decisionTimeoutMs + config.upstreamTimeoutMs };
  const journal = config.ledgerFile === undefined ? undefined : new LedgerFile(config.ledgerFile, log, config.ledgerMaxAccounts);
  const localLedger = config.passwordFailureBudget === 0 ? undefined : new LocalLoginLedger(ledgerRule, accounts, config.ledgerMaxAccounts, Date.now, journal);
  metrics.trackCacheSize(() => cache.size);
  if (sharesState(config)) {
    shared = await startSharedState(config, { cache, throttle, ledger: localLedger && { local: localLedger, rule: ledgerRule }, log, metrics });
  }
  const ledger: LoginLedger = shared?.ledger ?? localLedger ?? UNPROTECTED;
  const strategies = buildStrategies({ config, grant, introspection, accessTokens, metadata, ledger, knownPasswords: cache, names: accounts, log });
  const verifier = new Verifier(
    strategies,
    cache,
    shared?.throttle ?? throttle,
    ledger,
    accounts,
    {
      defaultAudience: config.audience,
      strategyOrder: config.strategyOrder,
      appPasswordPattern: config.appPasswordPattern === '' ? undefined : new RegExp(config.appPasswordPattern, 'u'),
      tokenUsernames: new Set(config.tokenUsernames.map((u) => u.toLowerCase())),
      decisionTimeoutMs: config.decisionTimeoutMs,
      staleIdentities: config.staleIfErrorSeconds > 0 ? new StaleIdentities(config.staleIfErrorSeconds, config.cacheMaxEntries) : undefined,
    },
    metrics.verifierEvents(),
    health,
    log,
    shared?.memory,
  );
  const pipeline = new DecisionPipeline(verifier, policy, { audience: config.audience, mailScopes: { imap: config.mailImapScopes, pop3: config.mailPop3Scopes, smtp: config.mailSmtpScopes }, identityTokens }, metrics, log);
  return {
    config,
    verifier,
    pipeline,
    keys,
    jwks: Object.freeze({ keys: [...(keys?.jwks.keys ?? []), ...(identityKeys?.jwks.keys ?? [])] }),
    health,
    metrics,
    introspection,
    log,
    policy,
    trust: new TrustedProxies(config.trustedProxies, log),
    servesAudience: (audience) => audience === config.audience || (policy?.current.audiences.has(audience) ?? false),
    async purge(target) {
      const account = verifier.accountOf(target);
      const purged = await verifier.purgeAccount(account);
      const names = account.names.size;
      if (!shared) return { purged, names };
      return { purged, names, broadcast: await shared.memory.purge(account) };
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
