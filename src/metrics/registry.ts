import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { CallOutcome, Endpoint } from '../upstream/http.js';
import { CREDENTIAL_TYPES, REASONS, type CredentialType, type Reason } from '../vocabulary.js';
import { droppedLogLines } from '../log.js';

/** Interfaces a decision can come from: the values of the `interface` label. */
export const INTERFACES = ['auth', 'verify', 'mail', 'cli', 'plugin'] as const;
export type Interface = (typeof INTERFACES)[number];

/** What credgate asks of the shared state (Redis), for `credgate_shared_state_errors_total{operation}`. */
/** Operations on the shared state (Redis): the values of the `operation` label. */
export const SHARED_OPERATIONS = ['recall', 'remember', 'throttle_check', 'throttle_record', 'purge_publish', 'ledger'] as const;
export type SharedOperation = (typeof SHARED_OPERATIONS)[number];
/**
 * Why a shared-state operation fell back to local state: not connected, no answer within `redisTimeoutMs`, an error reply,
 * or a ledger write fewer than `redisMinReplicas` replicas acknowledged in time.
 */
export type SharedFailure = 'unavailable' | 'timeout' | 'error' | 'unacknowledged';

export interface SharedStateMetrics {
  readonly up: Gauge;
  readonly errors: Counter<'operation' | 'reason'>;
  readonly purgesReceived: Counter;
}

/**
 * credgate's own registry (never prom-client's global one). Label values come only from fixed
 * sets — interface, result, reason, credential type, endpoint, outcome — never a username, IP or
 * token. Default process/Node metrics keep their standard unprefixed names.
 */
/**
 * Increments counted on the request path as plain additions to a remembered slot per label set,
 * and added to the prom-client counter when it is read (a scrape, or `get()`): prom-client hashes
 * and validates the labels on every `inc`, which a cached decision would pay for each request.
 */
class Tally<L extends string> {
  readonly #slots = new Map<number, { readonly labels: Record<L, string>; count: number }>();

  /** `id`: a number naming the label set (computed without building strings). */
  add(id: number, labels: () => Record<L, string>): void {
    const slot = this.#slots.get(id);
    if (slot !== undefined) slot.count++;
    else this.#slots.set(id, { labels: labels(), count: 1 });
  }

  /** Moves the counts into `counter` (its `collect`). */
  flush(counter: Counter<L>): void {
    for (const slot of this.#slots.values()) {
      if (slot.count === 0) continue;
      counter.inc(slot.labels, slot.count);
      slot.count = 0;
    }
  }
}

/** Small numbers for label values, so that a label set is named by arithmetic rather than a string. */
const indexOf = <T extends string>(values: readonly T[]) => Object.fromEntries(values.map((v, i) => [v, i])) as Readonly<Record<T, number>>;
const INTERFACE_NO = indexOf(INTERFACES);
const REASON_NO = indexOf(REASONS);
const CREDENTIAL_LABELS = ['none', ...CREDENTIAL_TYPES] as const;
const CREDENTIAL_NO = indexOf(CREDENTIAL_LABELS);
const CACHE_RESULT_NO = { hit: 0, negative_hit: 1, miss: 2 } as const;

export class Metrics {
  readonly registry = new Registry();
  readonly #decisionTally = new Tally<'interface' | 'result' | 'reason' | 'credential' | 'cached'>();
  readonly #cacheTally = new Tally<'result'>();
  /** Label objects of the duration histogram, made once per (interface, result). */
  readonly #durationLabels = new Map<number, { interface: Interface; result: string }>();

  readonly decisions: Counter<'interface' | 'result' | 'reason' | 'credential' | 'cached'> = new Counter({
    name: 'credgate_decisions_total',
    help: 'Decisions made, by interface, result (allow/deny/error), reason, credential type (none when denied) and whether the cache answered.',
    labelNames: ['interface', 'result', 'reason', 'credential', 'cached'] as const,
    registers: [this.registry],
    collect: () => this.#decisionTally.flush(this.decisions),
  });

  readonly decisionDuration = new Histogram({
    name: 'credgate_decision_duration_seconds',
    help: 'Time to reach a decision, from parsed request to answer.',
    labelNames: ['interface', 'result'] as const,
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });

  readonly upstreamRequests = new Counter({
    name: 'credgate_upstream_requests_total',
    help: 'Calls to the authorization server, by endpoint and outcome.',
    labelNames: ['endpoint', 'outcome'] as const,
    registers: [this.registry],
  });

  readonly upstreamDuration = new Histogram({
    name: 'credgate_upstream_request_duration_seconds',
    help: 'Latency of calls to the authorization server, by endpoint.',
    labelNames: ['endpoint'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });

  readonly cacheRequests: Counter<'result'> = new Counter({
    name: 'credgate_cache_requests_total',
    help: 'Decision cache look-ups: hit (a verified identity), negative_hit (a known-wrong credential), miss.',
    labelNames: ['result'] as const,
    registers: [this.registry],
    collect: () => this.#cacheTally.flush(this.cacheRequests),
  });

  readonly cacheEvictions = new Counter({
    name: 'credgate_cache_evictions_total',
    help: 'Live cache entries pushed out to make room (cacheMaxEntries reached); expiry and purges are not counted.',
    registers: [this.registry],
  });

  readonly jwksRefreshes = new Counter({
    name: 'credgate_jwks_refreshes_total',
    help: "Fetches of the authorization server's JWKS (start-up, expiry, or an unknown kid; at most one per 30 s), by result.",
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly coalescedRequests = new Counter({
    name: 'credgate_coalesced_requests_total',
    help: 'Requests that waited for an identical request already asking the AS instead of asking again.',
    registers: [this.registry],
  });

  readonly purges = new Counter({
    name: 'credgate_purges_total',
    help: "Admin purges of one user's cached decisions (POST /admin/purge).",
    registers: [this.registry],
  });

  readonly throttledRequests = new Counter({
    name: 'credgate_throttled_requests_total',
    help: 'Requests answered `throttled` without asking the AS (too many recent failures for the username or client IP).',
    registers: [this.registry],
  });

  readonly policyReloads = new Counter({
    name: 'credgate_policy_reloads_total',
    help: 'Reloads of a changed policy file, by result (success, or failure: the previous policy stays in force).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly policyLastReloadSuccessful = new Gauge({
    name: 'credgate_policy_last_reload_successful',
    help: 'Whether the last attempt to load the policy file succeeded (1) or was refused (0).',
    registers: [this.registry],
  });

  readonly upstreamCircuitState = new Gauge({
    name: 'credgate_upstream_circuit_state',
    help: "Circuit breaker of each AS endpoint: 0 closed, 1 half-open (a probe is under way), 2 open (calls refused at once). Stays 2 until the next call after breakerHalfOpenAfterMs probes.",
    labelNames: ['endpoint'] as const,
    registers: [this.registry],
  });

  readonly upstreamRetries = new Counter({
    name: 'credgate_upstream_retries_total',
    help: 'Calls to the AS made again after a failure (safe endpoints; the password grant only when the request never left).',
    labelNames: ['endpoint'] as const,
    registers: [this.registry],
  });

  readonly upstreamRejections = new Counter({
    name: 'credgate_upstream_rejections_total',
    help: 'Calls to the AS not made: circuit_open (the breaker is open) or concurrency_limit (maxConcurrentUpstream calls under way and maxQueuedUpstream waiting).',
    labelNames: ['endpoint', 'cause'] as const,
    registers: [this.registry],
  });

  readonly decisionTimeouts = new Counter({
    name: 'credgate_decision_timeouts_total',
    help: 'Decisions that reached decisionTimeoutMs before the AS answered (answered 503, or from a stale identity).',
    registers: [this.registry],
  });

  readonly staleIdentitiesServed = new Counter({
    name: 'credgate_stale_identities_served_total',
    help: 'Requests answered from an expired cached identity because the AS could not be asked (staleIfErrorSeconds).',
    registers: [this.registry],
  });

  readonly loadShed = new Counter({
    name: 'credgate_load_shed_total',
    help: 'Requests answered 503 at once because the process was overloaded: event_loop_delay or heap.',
    labelNames: ['cause'] as const,
    registers: [this.registry],
  });

  /** What `credgate_log_lines_dropped_total` has counted of droppedLogLines() so far. */
  #droppedLinesCounted = 0;

  readonly logLinesDropped: Counter = new Counter({
    name: 'credgate_log_lines_dropped_total',
    help: "Log lines dropped because the log's reader (stdout) left 16 MiB unread: decisions go on rather than queue lines without bound.",
    registers: [this.registry],
    // The count lives in the log's destination (log.ts), made before any registry.
    collect: () => {
      const total = droppedLogLines();
      if (total > this.#droppedLinesCounted) this.logLinesDropped.inc(total - this.#droppedLinesCounted);
      this.#droppedLinesCounted = total;
    },
  });

  readonly buildInfo = new Gauge({
    name: 'credgate_build_info',
    help: 'Always 1; labels carry the credgate and Node.js versions.',
    labelNames: ['version', 'node_version'] as const,
    registers: [this.registry],
  });

  constructor(version: string) {
    collectDefaultMetrics({ register: this.registry });
    // prom-client names three gauges `*_total`, a suffix Prometheus reserves for counters
    // (prometheus/client_js#283; `promtool check metrics` flags them). The labelled gauges without
    // the suffix (nodejs_active_handles{type}, …) hold the same numbers.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) this.registry.removeSingleMetric(name);
    this.buildInfo.set({ version, node_version: process.version }, 1);
    // Pre-create the common series so dashboards and alerts see zeros rather than gaps.
    for (const endpoint of ['discovery', 'token', 'introspection', 'jwks'] as const) {
      this.upstreamRequests.inc({ endpoint, outcome: 'ok' }, 0);
      this.upstreamCircuitState.set({ endpoint }, 0);
      this.upstreamRetries.inc({ endpoint }, 0);
      for (const cause of ['circuit_open', 'concurrency_limit'] as const) this.upstreamRejections.inc({ endpoint, cause }, 0);
    }
    for (const cause of ['event_loop_delay', 'heap'] as const) this.loadShed.inc({ cause }, 0);
    for (const result of ['success', 'failure'] as const) {
      this.policyReloads.inc({ result }, 0);
      this.jwksRefreshes.inc({ result }, 0);
    }
    for (const result of ['hit', 'negative_hit', 'miss'] as const) this.cacheRequests.inc({ result }, 0);
  }

  /** Shared-state (Redis) metrics, created only with shared Redis (`redisUrl`, `redisSentinels`, `redisClusterNodes`): a lone replica shows none. */
  sharedState(): SharedStateMetrics {
    const metrics: SharedStateMetrics = {
      up: new Gauge({
        name: 'credgate_shared_state_up',
        help: 'Whether the shared state (Redis) is connected and subscribed to purges (1); 0: deciding with local state only.',
        registers: [this.registry],
      }),
      errors: new Counter({
        name: 'credgate_shared_state_errors_total',
        help: 'Shared-state operations that fell back to local state, by operation and reason (unavailable, timeout, error, unacknowledged).',
        labelNames: ['operation', 'reason'] as const,
        registers: [this.registry],
      }),
      purgesReceived: new Counter({
        name: 'credgate_shared_state_purges_received_total',
        help: "Purges received from the shared state's broadcast (this replica's own included).",
        registers: [this.registry],
      }),
    };
    metrics.up.set(0);
    for (const operation of SHARED_OPERATIONS) {
      metrics.errors.inc({ operation, reason: 'unavailable' }, 0);
    }
    return metrics;
  }

  /** `credgate_cache_entries`, read at scrape time. */
  trackCacheSize(size: () => number): void {
    new Gauge({ name: 'credgate_cache_entries', help: 'Entries in the decision cache (positive and negative).', registers: [this.registry], collect() { this.set(size()); } });
  }

  /** `credgate_upstream_in_flight`, read at scrape time. */
  trackUpstreamInFlight(inFlight: () => number): void {
    new Gauge({ name: 'credgate_upstream_in_flight', help: 'Calls to the AS under way now (bounded by maxConcurrentUpstream).', registers: [this.registry], collect() { this.set(inFlight()); } });
  }

  observeUpstream = (endpoint: Endpoint, outcome: CallOutcome, seconds: number): void => {
    this.upstreamRequests.inc({ endpoint, outcome });
    this.upstreamDuration.observe({ endpoint }, seconds);
    if (endpoint === 'jwks') this.jwksRefreshes.inc({ result: outcome === 'ok' ? 'success' : 'failure' });
  };

  /** The verifier's events (src/verify/verifier.ts VerifierEvents) as counters. */
  verifierEvents() {
    return {
      cacheLookup: (result: 'hit' | 'negative_hit' | 'miss') => this.cacheLookup(result),
      coalesced: () => this.coalescedRequests.inc(),
      throttled: () => this.throttledRequests.inc(),
      decisionTimeout: () => this.decisionTimeouts.inc(),
      staleServed: () => this.staleIdentitiesServed.inc(),
    };
  }

  /** One decision-cache look-up. */
  cacheLookup(result: 'hit' | 'negative_hit' | 'miss'): void {
    this.#cacheTally.add(CACHE_RESULT_NO[result], () => ({ result }));
  }

  observeDecision(iface: Interface, allow: boolean, reason: Reason, credential: CredentialType | undefined, seconds: number, cached = false): void {
    const resultNo = allow ? 0 : reason === 'upstream_unavailable' ? 2 : 1;
    const result = (['allow', 'deny', 'error'] as const)[resultNo];
    const kind = credential ?? 'none';
    const series = INTERFACE_NO[iface] * 3 + resultNo;
    // (interface, result) × reason × credential × cached; result follows from allow and reason.
    const id = ((series * REASONS.length + REASON_NO[reason]) * CREDENTIAL_LABELS.length + CREDENTIAL_NO[kind]) * 2 + (cached ? 1 : 0);
    this.#decisionTally.add(id, () => ({ interface: iface, result, reason, credential: kind, cached: cached ? 'true' : 'false' }));
    let labels = this.#durationLabels.get(series);
    if (labels === undefined) this.#durationLabels.set(series, (labels = { interface: iface, result }));
    this.decisionDuration.observe(labels, seconds);
  }
}
