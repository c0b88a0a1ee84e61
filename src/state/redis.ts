import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '../log.js';
import type { SharedFailure, SharedOperation, SharedStateMetrics } from '../metrics/registry.js';

export interface SharedRedisOptions {
  /** `redis://` or `rediss://` URL (may hold a password: never logged). */
  readonly url: string;
  /** Prefix of every key and of the purge channel (`redisKeyPrefix`, default `credgate:`). */
  readonly keyPrefix: string;
  /** Longest one command may take before the caller falls back to local state (`redisTimeoutMs`). */
  readonly timeoutMs: number;
  readonly log: Logger;
  readonly metrics: SharedStateMetrics;
  /** A purge arrived on the channel: the HMAC (`CredentialCache.userKey`) of one username. */
  onPurge(userKey: string): void;
  /** The purge subscription is (again) in place. Purges sent while it was not have been missed. */
  onSubscribed(): void;
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
 */
export class SharedRedis {
  readonly #options: SharedRedisOptions;
  readonly #commands: Redis;
  readonly #subscriber: Redis;
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
    this.#target = redisTarget(options.url);
    const common: RedisOptions = {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResubscribe: false,
      connectTimeout: Math.max(1000, options.timeoutMs * 10),
      retryStrategy: (attempt) => (this.#closed ? null : reconnectDelay(attempt)),
      // A failover left us on a replica: reconnect so that DNS / the proxy gives us the new primary.
      reconnectOnError: (err) => err.message.startsWith('READONLY'),
    };
    this.#commands = new Redis(options.url, { ...common, commandTimeout: options.timeoutMs, connectionName: 'credgate' });
    this.#subscriber = new Redis(options.url, { ...common, commandTimeout: Math.max(1000, options.timeoutMs * 10), connectionName: 'credgate-purges' });

    for (const connection of [this.#commands, this.#subscriber]) {
      connection.on('error', (err: Error) => this.#logError(err));
      connection.on('close', () => {
        if (connection === this.#subscriber) this.#subscribed = false;
        this.#transition();
      });
    }
    this.#commands.on('ready', () => {
      this.#pausedUntil = 0;
      this.#transition();
      void this.#publishPending();
    });
    this.#subscriber.on('ready', () => void this.#subscribe());
    this.#subscriber.on('message', (channel: string, message: string) => {
      if (channel !== this.#channel || !USER_KEY.test(message)) return;
      options.metrics.purgesReceived.inc();
      options.onPurge(message);
    });
  }

  /** The command connection, for registering scripts (`defineCommand`) before use. */
  get commandConnection(): Redis {
    return this.#commands;
  }

  /** `prefix` + parts joined by `:`. */
  key(...parts: string[]): string {
    return this.#options.keyPrefix + parts.join(':');
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
  async run<T>(operation: SharedOperation, command: (redis: Redis) => Promise<T>): Promise<T | undefined> {
    if (this.#commands.status !== 'ready' || Date.now() < this.#pausedUntil) return this.#failed(operation, 'unavailable');
    try {
      return await command(this.#commands);
    } catch (err) {
      const timedOut = err instanceof Error && err.message === 'Command timed out';
      if (timedOut && Date.now() >= this.#pausedUntil) {
        this.#pausedUntil = Date.now() + TIMEOUT_PAUSE_MS;
        this.#options.log.warn({ operation, timeoutMs: this.#options.timeoutMs, redis: this.#target }, 'shared state: redis did not answer in time; using local state for 2 s');
      } else if (!timedOut) {
        this.#logError(err as Error);
      }
      return this.#failed(operation, timedOut ? 'timeout' : 'error');
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
    await Promise.all(
      [this.#commands, this.#subscriber].map(async (connection) => {
        // QUIT when connected (answers pending replies first), else just drop the socket and the reconnect timer.
        if (connection.status === 'ready') await connection.quit().catch(() => connection.disconnect());
        else connection.disconnect();
      }),
    );
    this.#options.metrics.up.set(0);
  }

  async #subscribe(): Promise<void> {
    try {
      await this.#subscriber.subscribe(this.#channel);
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
