import { createHash } from 'node:crypto';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '../log.js';
import type { SharedFailure, SharedOperation, SharedStateMetrics } from '../metrics/registry.js';

/** A connection that runs commands: one Redis (a URL or the primary Sentinel names) or a Cluster. */
export type RedisClient = Redis | Cluster;

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** Credentials of the data nodes, when they do not come in a URL (never logged). */
interface NodeCredentials {
  readonly username?: string | undefined;
  readonly password?: string | undefined;
}

/** Where Redis is: `redisUrl`, `redisSentinels` (+ `redisSentinelName`), or `redisClusterNodes`. */
export type RedisEndpoint =
  /** `redis://` or `rediss://` URL (may hold a password: never logged). */
  | { readonly url: string }
  | { readonly sentinel: NodeCredentials & { readonly sentinels: readonly HostPort[]; readonly name: string; readonly sentinelUsername?: string | undefined; readonly sentinelPassword?: string | undefined } }
  | { readonly cluster: NodeCredentials & { readonly nodes: readonly HostPort[] } };

export type SharedRedisOptions = RedisEndpoint & {
  /** Prefix of every key and of the purge channel (`redisKeyPrefix`, default `credgate:`). */
  readonly keyPrefix: string;
  /** Longest one command may take before the caller falls back to local state (`redisTimeoutMs`). */
  readonly timeoutMs: number;
  /** `redisMinReplicas`: replicas that must acknowledge an `acknowledged` write (default 0: not waited for). */
  readonly minReplicas?: number;
  readonly log: Logger;
  readonly metrics: SharedStateMetrics;
  /** A purge arrived on the channel: the HMAC (`CredentialCache.userKey`) of one username. */
  onPurge(userKey: string): void;
  /** The purge subscription is (again) in place. Purges sent while it was not have been missed. */
  onSubscribed(): void;
};

/** A write that fewer than `redisMinReplicas` replicas acknowledged in time: as good as not made (a failover may lose it). */
export class UnacknowledgedWrite extends Error {
  constructor(readonly wanted: number, readonly acknowledged: number) {
    super(`write acknowledged by ${acknowledged} of the ${wanted} replicas required (redisMinReplicas)`);
  }
}

/** A purge message is a `userKey`: 32 bytes of HMAC-SHA256, base64url. Anything else is ignored. */
const USER_KEY = /^[A-Za-z0-9_-]{43}$/;
/** Reconnect back-off: 100 ms doubling to 2 s, ±20 % jitter so replicas do not reconnect in step. */
const RECONNECT_CAP_MS = 2000;
/** After a command timed out (Redis hung, not gone), skip Redis this long rather than pay the timeout per request. */
const TIMEOUT_PAUSE_MS = 2000;
/** Connection errors are logged at most this often (one line says how many were not). */
const ERROR_LOG_INTERVAL_MS = 30_000;
/** Purges that could not be published are kept (up to this many users) and sent once Redis is back. */
const MAX_PENDING_PURGES = 10_000;

export function reconnectDelay(attempt: number, random: () => number = Math.random): number {
  const base = Math.min(RECONNECT_CAP_MS, 50 * 2 ** Math.min(attempt, 10));
  return Math.round(base * (0.8 + 0.4 * random()));
}

/** `host:port/db` of a Redis URL, for logs: never the user or password. */
export function redisTarget(url: string): string {
  const parsed = new URL(url);
  return `${parsed.protocol}//${parsed.hostname}:${parsed.port || 6379}${parsed.pathname.length > 1 ? parsed.pathname : ''}`;
}

const hostPort = (node: HostPort) => (node.host.includes(':') ? `[${node.host}]:${node.port}` : `${node.host}:${node.port}`);

/** Where an endpoint points, for logs: addresses and the Sentinel name, never a user or password. */
export function endpointTarget(endpoint: RedisEndpoint): string {
  if ('url' in endpoint) return redisTarget(endpoint.url);
  if ('sentinel' in endpoint) return `sentinel ${endpoint.sentinel.name} via ${endpoint.sentinel.sentinels.map(hostPort).join(',')}`;
  return `cluster ${endpoint.cluster.nodes.map(hostPort).join(',')}`;
}

/** SHA1 of a script, as EVALSHA names it. */
const shas = new Map<string, string>();
function sha1(lua: string): string {
  let sha = shas.get(lua);
  if (sha === undefined) shas.set(lua, (sha = createHash('sha1').update(lua).digest('hex')));
  return sha;
}

/**
 * The connections to Redis: one for commands, one subscribed to purges (a subscribed connection
 * can do nothing else). Built so that a Redis that is down, slow or gone never crashes, blocks or
 * slows credgate beyond `timeoutMs`:
 *
 * - no offline queue and no per-command retries: a command while disconnected fails at once, and
 *   the caller decides with local state (counted in `credgate_shared_state_errors_total`);
 * - `commandTimeout`: a hung Redis costs one timeout, then it is skipped for 2 s;
 * - reconnects forever by itself with capped back-off; errors are logged, rate-limited, and never
 *   thrown (an `error` listener is always attached);
 * - the purge subscription is renewed by hand on every reconnect, and `onSubscribed` tells the
 *   owner, since purges published while it was down are lost (pub/sub keeps nothing).
 *
 * With Sentinel, both connections ask the sentinels for the primary on every (re)connect (and check
 * its role), so a failover is one more reconnect: the subscription is renewed on the new primary.
 * With Cluster, commands go through an ioredis `Cluster` (routed by key slot; bounded here by
 * `timeoutMs` as a whole, redirections included), and purges are subscribed on one node at a time
 * (a cluster broadcasts every PUBLISH to all nodes); when that node is gone for good the next one
 * is tried, and that too is a renewal.
 */
export class SharedRedis {
  readonly #options: SharedRedisOptions;
  readonly #commands: RedisClient;
  #subscriber: Redis;
  /** Cluster only: which node the next purge subscriber connects to (rotates when one is gone). */
  #subscriberNode = 0;
  #subscriberTimer: NodeJS.Timeout | undefined;
  readonly #common: RedisOptions;
  readonly #channel: string;
  readonly #target: string;
  #subscribed = false;
  #pausedUntil = 0;
  #closed = false;
  #lastErrorLog = 0;
  #suppressedErrors = 0;
  /** Whether the last transition logged was to "up", so each loss and recovery is logged once. */
  #wasUp: boolean | undefined;
  readonly #pendingPurges = new Set<string>();
  readonly #upWaiters: (() => void)[] = [];

  constructor(options: SharedRedisOptions) {
    this.#options = options;
    this.#channel = `${options.keyPrefix}purge`;
    this.#target = endpointTarget(options);
    const connectTimeout = Math.max(1000, options.timeoutMs * 10);
    this.#common = {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResubscribe: false,
      connectTimeout,
      retryStrategy: (attempt) => (this.#closed ? null : reconnectDelay(attempt)),
      // A failover left us on a replica: reconnect so that DNS / the proxy / Sentinel gives us the new primary.
      reconnectOnError: (err) => err.message.startsWith('READONLY'),
    };
    if ('cluster' in options) {
      const { nodes, username, password } = options.cluster;
      this.#commands = new Cluster(nodes.map((n) => ({ ...n })), {
        lazyConnect: true,
        enableOfflineQueue: false,
        scaleReads: 'master',
        clusterRetryStrategy: (attempt) => (this.#closed ? null : reconnectDelay(attempt)),
        slotsRefreshTimeout: connectTimeout,
        redisOptions: { username, password, connectTimeout, commandTimeout: options.timeoutMs, maxRetriesPerRequest: 0, autoResubscribe: false, connectionName: 'credgate' },
      });
    } else {
      this.#commands = this.#connection({ commandTimeout: options.timeoutMs, connectionName: 'credgate' });
    }
    this.#subscriber = this.#newSubscriber();

    this.#commands.on('error', (err: Error) => this.#logError(err));
    this.#commands.on('close', () => this.#transition());
    this.#commands.on('ready', () => {
      this.#pausedUntil = 0;
      this.#transition();
      void this.#publishPending();
    });
  }

  /** A Redis connection to the URL or to the primary Sentinel names (not for Cluster). */
  #connection(extra: RedisOptions): Redis {
    const options = { ...this.#common, ...extra };
    const endpoint = this.#options as RedisEndpoint;
    if ('url' in endpoint) return new Redis(endpoint.url, options);
    if ('sentinel' in endpoint) {
      const { sentinels, name, sentinelUsername, sentinelPassword, username, password } = endpoint.sentinel;
      return new Redis({
        ...options,
        sentinels: sentinels.map((s) => ({ ...s })),
        name,
        role: 'master',
        sentinelUsername,
        sentinelPassword,
        username,
        password,
        sentinelCommandTimeout: options.connectTimeout,
        // All sentinels unreachable: the same back-off as any reconnect.
        sentinelRetryStrategy: (attempt) => (this.#closed ? null : reconnectDelay(attempt)),
        // No failoverDetector: its sentinel connections (ioredis 6) have no error listener (unhandled
        // error lines on stderr while a sentinel is down) and kept reconnecting after quit(), holding
        // the process open. A failover reaches us anyway: a dead primary drops the connection, a
        // demoted one answers READONLY (reconnectOnError); each reconnect asks the sentinels again.
      });
    }
    // Cluster: the purge subscriber, on one node (commands use the Cluster).
    const { nodes, username, password } = endpoint.cluster;
    const known = (this.#commands as Cluster | undefined)?.nodes('all').map((n) => ({ host: String(n.options.host), port: Number(n.options.port) })) ?? [];
    const candidates = known.length > 0 ? known : nodes;
    const node = candidates[this.#subscriberNode++ % candidates.length]!;
    return new Redis({
      ...options,
      host: node.host,
      port: node.port,
      username,
      password,
      // A few tries on this node; then 'end', and the next node is tried.
      retryStrategy: (attempt) => (this.#closed || attempt > 3 ? null : reconnectDelay(attempt)),
    });
  }

  #newSubscriber(): Redis {
    const connection = this.#connection({ commandTimeout: Math.max(1000, this.#options.timeoutMs * 10), connectionName: 'credgate-purges' });
    connection.on('error', (err: Error) => this.#logError(err));
    connection.on('close', () => {
      if (connection === this.#subscriber) this.#subscribed = false;
      this.#transition();
    });
    connection.on('ready', () => void this.#subscribe(connection));
    connection.on('message', (channel: string, message: string) => {
      if (channel !== this.#channel || !USER_KEY.test(message)) return;
      this.#options.metrics.purgesReceived.inc();
      this.#options.onPurge(message);
    });
    if ('cluster' in this.#options) {
      connection.once('end', () => {
        if (this.#closed || connection !== this.#subscriber) return;
        this.#subscriberTimer = setTimeout(() => {
          if (this.#closed) return;
          this.#subscriber = this.#newSubscriber();
          this.#subscriber.connect().catch(() => undefined);
        }, reconnectDelay(1));
      });
    }
    return connection;
  }

  /** The command connection, for registering scripts (`defineCommand`) before use. */
  get commandConnection(): RedisClient {
    return this.#commands;
  }

  /** `prefix` + parts joined by `:`. */
  key(...parts: string[]): string {
    return this.#options.keyPrefix + parts.join(':');
  }

  /**
   * Prefix of the keys one script reads and writes together (`group`, e.g. `ledger`): `redisKeyPrefix`,
   * and in a Cluster `redisKeyPrefix{redisKeyPrefix<group>}:`, one hash tag, so that they all live in
   * one slot. (Outside a Cluster the names stay as they were, so that an upgrade keeps its ledger.)
   */
  slotPrefix(group: string): string {
    const prefix = this.#options.keyPrefix;
    return 'cluster' in this.#options ? `${prefix}{${prefix}${group}}:` : prefix;
  }

  /** `redisMinReplicas`. */
  get minReplicas(): number {
    return this.#options.minReplicas ?? 0;
  }

  /**
   * Runs `lua` (EVALSHA, EVAL if this node does not have it yet) with one key, then `WAIT
   * minReplicas`, both in one write on one connection, so that WAIT counts this script's writes
   * (sent apart, a reconnect in between would put WAIT on a new connection with nothing to wait
   * for, and ioredis re-sends a script outside a pipeline after NOSCRIPT). Throws
   * UnacknowledgedWrite when fewer replicas than that acknowledged within 80 % of `timeoutMs` (or
   * WAIT's answer did not come within `timeoutMs`).
   */
  async acknowledged<T>(redis: RedisClient, lua: string, key: string, args: readonly (string | number)[]): Promise<T> {
    const wanted = this.minReplicas;
    const waitMs = Math.max(1, Math.floor(this.#options.timeoutMs * 0.8)); // never 0: WAIT 0 blocks for ever
    const send = async (eval_: boolean) => {
      const pipeline = redis.pipeline();
      if (eval_) pipeline.eval(lua, 1, key, ...args);
      else pipeline.evalsha(sha1(lua), 1, key, ...args);
      return (await pipeline.wait(wanted, waitMs).exec()) ?? [];
    };
    let results = await send(false);
    if (results[0]?.[0]?.message.startsWith('NOSCRIPT')) results = await send(true);
    const [script, wait] = results;
    if (script === undefined || wait === undefined) throw new Error('pipeline answered nothing');
    if (script[0]) throw script[0];
    // Redis ends a WAIT on its own timer (up to 1/hz late): no answer by `timeoutMs` is still "too few replicas", not a hung Redis.
    if (wait[0]?.message === 'Command timed out') throw new UnacknowledgedWrite(wanted, 0);
    if (wait[0]) throw wait[0];
    if (Number(wait[1]) < wanted) throw new UnacknowledgedWrite(wanted, Number(wait[1]));
    return script[1] as T;
  }

  /** Connected for commands and subscribed to purges. */
  get up(): boolean {
    return this.#commands.status === 'ready' && this.#subscribed;
  }

  /** For `/readyz`: never fails readiness (see Health), but says what is going on. */
  status(): { ok: boolean; detail?: string } {
    if (this.up && Date.now() >= this.#pausedUntil) return { ok: true, detail: `redis ${this.#target}` };
    if (this.#commands.status === 'ready' && Date.now() < this.#pausedUntil) return { ok: false, detail: 'redis not answering in time: using local state' };
    return { ok: false, detail: 'redis unreachable: using local state' };
  }

  /** Connects both; resolves once both are up or after `waitMs`, whichever is first. Never rejects. */
  async start(waitMs: number): Promise<void> {
    // A failed first attempt rejects connect(), but the retry strategy keeps trying in the background.
    for (const connection of [this.#commands, this.#subscriber]) connection.connect().catch(() => undefined);
    let timer: NodeJS.Timeout | undefined;
    const up = new Promise<void>((resolve) => this.#upWaiters.push(resolve));
    const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs)));
    await Promise.race([up, deadline]);
    clearTimeout(timer);
    this.#transition();
  }

  /**
   * Runs one operation on the command connection. Answers undefined, and counts why, when Redis is
   * not connected, does not answer within `timeoutMs`, or answers with an error.
   */
  async run<T>(operation: SharedOperation, command: (redis: RedisClient) => Promise<T>): Promise<T | undefined> {
    if (this.#commands.status !== 'ready' || Date.now() < this.#pausedUntil) return this.#failed(operation, 'unavailable');
    let deadline: NodeJS.Timeout | undefined;
    try {
      const answer = command(this.#commands);
      if (!(this.#commands instanceof Cluster)) return await answer;
      // A Cluster retries redirections and failovers by itself, each try with its own commandTimeout: bound the whole.
      return await Promise.race([answer, new Promise<never>((_, reject) => (deadline = setTimeout(() => reject(new Error('Command timed out')), this.#options.timeoutMs)))]);
    } catch (err) {
      if (err instanceof UnacknowledgedWrite) {
        this.#logError(err);
        return this.#failed(operation, 'unacknowledged');
      }
      const timedOut = err instanceof Error && err.message === 'Command timed out';
      if (timedOut && Date.now() >= this.#pausedUntil) {
        this.#pausedUntil = Date.now() + TIMEOUT_PAUSE_MS;
        this.#options.log.warn({ operation, timeoutMs: this.#options.timeoutMs, redis: this.#target }, 'shared state: redis did not answer in time; using local state for 2 s');
      } else if (!timedOut) {
        this.#logError(err as Error);
      }
      return this.#failed(operation, timedOut ? 'timeout' : 'error');
    } finally {
      clearTimeout(deadline);
    }
  }

  /**
   * Tells every replica (this one included) to drop its cached decisions for `userKey`. When Redis
   * cannot take it now, the purge is kept and published once it is back. Answers whether it went out now.
   */
  async publishPurge(userKey: string): Promise<boolean> {
    const sent = await this.run('purge_publish', (redis) => redis.publish(this.#channel, userKey));
    if (sent !== undefined) return true;
    if (this.#pendingPurges.size < MAX_PENDING_PURGES) this.#pendingPurges.add(userKey);
    return false;
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#subscriberTimer);
    await Promise.all(
      [this.#commands, this.#subscriber].map(async (connection) => {
        // QUIT when connected (answers pending replies first), else just drop the socket and the reconnect timer.
        if (connection.status === 'ready') await connection.quit().catch(() => connection.disconnect());
        else connection.disconnect();
      }),
    );
    this.#options.metrics.up.set(0);
  }

  async #subscribe(connection: Redis): Promise<void> {
    try {
      await connection.subscribe(this.#channel);
      if (connection !== this.#subscriber) return; // replaced meanwhile (Cluster)
    } catch (err) {
      // The connection dropped again in between; the next 'ready' tries again.
      this.#logError(err as Error);
      return;
    }
    // Drop what may be stale before reporting "up": purges sent while unsubscribed were missed.
    this.#options.onSubscribed();
    this.#subscribed = true;
    this.#transition();
  }

  async #publishPending(): Promise<void> {
    for (const userKey of [...this.#pendingPurges]) {
      this.#pendingPurges.delete(userKey);
      if (!(await this.publishPurge(userKey))) return; // kept again; the next 'ready' goes on
    }
  }

  #transition(): void {
    const up = this.up;
    this.#options.metrics.up.set(up ? 1 : 0);
    if (up) for (const resolve of this.#upWaiters.splice(0)) resolve();
    if (up === this.#wasUp || this.#closed) return;
    if (up) this.#options.log.info({ redis: this.#target }, 'shared state connected: throttling, negative cache, ASP markers and purges are shared');
    else this.#options.log.warn({ redis: this.#target }, 'shared state unreachable: deciding with local state until redis is back (reconnecting)');
    this.#wasUp = up;
  }

  #failed(operation: SharedOperation, reason: SharedFailure): undefined {
    this.#options.metrics.errors.inc({ operation, reason });
    return undefined;
  }

  #logError(err: Error): void {
    if (this.#closed) return;
    const now = Date.now();
    if (now - this.#lastErrorLog < ERROR_LOG_INTERVAL_MS) {
      this.#suppressedErrors++;
      return;
    }
    this.#options.log.warn({ redis: this.#target, err: err.message, suppressed: this.#suppressedErrors }, 'shared state: redis error');
    this.#lastErrorLog = now;
    this.#suppressedErrors = 0;
  }
}
