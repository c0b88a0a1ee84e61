import type { CredentialCache } from '../verify/cache.js';
import type { SharedMemory } from '../verify/shared.js';
import type { SharedRedis } from './redis.js';

export interface SharedMemoryOptions {
  /** `negativeCacheTtlSeconds`: how long a known-wrong credential is shared (0: not shared). */
  readonly negativeTtlSeconds: number;
  /** `appPasswordMemorySeconds`: how long an ASP marker is shared (0: not shared). */
  readonly appPasswordMemorySeconds: number;
}

/**
 * Known-wrong credentials, ASP markers and known-good-password markers in Redis, under the local
 * cache's own HMAC keys: `neg:<key>` (PX negativeCacheTtl), `asp:<key>` and `pw:<key>` (PX
 * appPasswordMemory). Values are `1`: Redis learns nothing but that some credential failed, was an
 * ASP, or succeeded as a password. A replica that restarts learns them back on its first miss.
 *
 * A purge sets `purged:<userKey>` for one negative TTL: while it stands, shared negative entries of
 * that user are ignored (a password set seconds ago must not stay "wrong" on another replica), at the
 * cost of asking the AS again for that user's wrong credentials during those seconds.
 */
export class RedisSharedMemory implements SharedMemory {
  constructor(
    private readonly redis: SharedRedis,
    private readonly names: Pick<CredentialCache, 'userKey' | 'subjectKey'>,
    private readonly options: SharedMemoryOptions,
  ) {}

  async recall(key: string, username: string | undefined): Promise<{ denied: boolean; appPassword: boolean; knownPassword: boolean }> {
    const keys = [this.redis.key('neg', key), this.redis.key('asp', key), this.redis.key('pw', key)];
    if (username !== undefined) keys.push(this.#purgedKey(username));
    // One round trip: the commands are pipelined on the connection (and need no common hash slot).
    const values = await this.redis.run('recall', (redis) => Promise.all(keys.map((k) => redis.get(k))));
    if (values === undefined) return { denied: false, appPassword: false, knownPassword: false };
    const [negative, appPassword, knownPassword, purged] = values;
    return { denied: negative != null && purged == null, appPassword: appPassword != null, knownPassword: knownPassword != null };
  }

  async rememberPassword(key: string): Promise<void> {
    if (this.options.appPasswordMemorySeconds <= 0) return;
    await this.redis.run('remember', (redis) => redis.set(this.redis.key('pw', key), '1', 'PX', this.options.appPasswordMemorySeconds * 1000));
  }

  async forgetPassword(key: string): Promise<void> {
    await this.redis.run('remember', (redis) => redis.del(this.redis.key('pw', key)));
  }

  async rememberDenied(key: string): Promise<void> {
    if (this.options.negativeTtlSeconds <= 0) return;
    await this.redis.run('remember', (redis) => redis.set(this.redis.key('neg', key), '1', 'PX', this.options.negativeTtlSeconds * 1000));
  }

  async rememberAppPassword(key: string): Promise<void> {
    if (this.options.appPasswordMemorySeconds <= 0) return;
    await this.redis.run('remember', (redis) => redis.set(this.redis.key('asp', key), '1', 'PX', this.options.appPasswordMemorySeconds * 1000));
  }

  /**
   * Every replica drops its cached decisions for `username` (broadcast), and shared negative entries
   * of that user stop counting. Answers whether the other replicas were told now (else they will be
   * once Redis is back; SharedRedis keeps the purge).
   */
  async purge(account: { subjects: ReadonlySet<string>; names: ReadonlySet<string> }): Promise<boolean> {
    if (this.options.negativeTtlSeconds > 0) {
      for (const name of account.names) await this.redis.run('purge_publish', (redis) => redis.set(this.#purgedKey(name), '1', 'PX', this.options.negativeTtlSeconds * 1000));
    }
    // Every replica drops entries filed under each name and each subject of the account.
    const keys = [...[...account.names].map((n) => this.names.userKey(n)), ...[...account.subjects].map((s) => this.names.subjectKey(s))];
    let sent = true;
    for (const key of keys) sent = (await this.redis.publishPurge(key)) && sent;
    return sent;
  }

  #purgedKey(username: string): string {
    return this.redis.key('purged', this.names.userKey(username));
  }
}
