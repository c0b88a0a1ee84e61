import { createHmac, randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { normaliseUsername } from './strategy.js';
import type { Credentials, Identity } from './types.js';

interface Entry {
  readonly outcome: Outcome;
  /** `userKey` of the username the entry is indexed under, for purges. */
  readonly user: string | undefined;
}

/** What a finished strategy run said, in the form that can be remembered. */
export type Outcome = { readonly kind: 'identity'; readonly identity: Identity } | { readonly kind: 'denied' };

export interface CacheOptions {
  /** Longest a positive entry lives, seconds (0: no positive caching). */
  readonly ttlSeconds: number;
  /** Lifetime of a negative entry, seconds (0: no negative caching). */
  readonly negativeTtlSeconds: number;
  readonly maxEntries: number;
  /** HMAC key; random per process when absent. */
  readonly keySecret?: string;
  /** How long a credential is remembered as an ASP, seconds (0: not remembered). */
  readonly appPasswordMemorySeconds: number;
  /** Called when a live entry is pushed out to make room (not on expiry, purge or overwrite). */
  readonly onEvict?: () => void;
}

function decodeKey(secret: string): Buffer {
  const key = /^[0-9a-f]+$/i.test(secret) && secret.length % 2 === 0 ? Buffer.from(secret, 'hex') : Buffer.from(secret, 'base64');
  if (key.length < 32) throw new Error('cacheKeySecret must hold at least 32 bytes');
  return key;
}

/**
 * Remembers outcomes by an HMAC of (credential kind, username, secret, audience): the cache never
 * holds a password or token, and its keys cannot be reversed without the HMAC key. It caches the
 * *identity*, not the allow: scopes are checked on every request, so a request needing more can
 * never ride on a cached answer for less (the CVE-2021-32701 class). Positive entries live
 * min(ttlSeconds, exp − now); nothing is cached for upstream errors (the caller never stores them).
 * Memory: one entry is the 43-character key, the Identity object, lru-cache's bookkeeping and the
 * purge index; `npm run bench` measured about 700 bytes of heap per entry at 1M entries when every
 * entry belongs to a different user (the worst case for the index). See BENCHMARKS.md.
 */
export class CredentialCache {
  readonly #hmacKey: Buffer;
  readonly #lru: LRUCache<string, Entry>;
  /** userKey (HMAC of the normalised username) → keys, so that one user's entries can be purged, also by
   * a purge another replica broadcast (which carries only the HMAC). */
  readonly #byUser = new Map<string, Set<string>>();
  readonly #options: CacheOptions;
  /** HMAC keys of credentials that turned out to be ASPs; lives much longer than decisions. */
  readonly #appPasswords: LRUCache<string, true>;

  constructor(options: CacheOptions) {
    this.#options = options;
    this.#hmacKey = options.keySecret ? decodeKey(options.keySecret) : randomBytes(32);
    this.#lru = new LRUCache<string, Entry>({
      max: options.maxEntries,
      ttl: Math.max(options.ttlSeconds, options.negativeTtlSeconds, 1) * 1000,
      dispose: (entry, key, reason) => {
        this.#unindex(key, entry.user);
        if (reason === 'evict') options.onEvict?.();
      },
    });
    this.#appPasswords = new LRUCache<string, true>({ max: options.maxEntries, ttl: Math.max(options.appPasswordMemorySeconds, 1) * 1000 });
  }

  keyFor(credentials: Credentials, audience: string): string {
    const mac = createHmac('sha256', this.#hmacKey);
    if (credentials.kind === 'basic') mac.update('basic\0').update(normaliseUsername(credentials.username)).update('\0').update(credentials.password);
    else mac.update('bearer\0\0').update(credentials.token);
    return mac.update('\0').update(audience).digest('base64url');
  }

  /**
   * HMAC of a labelled value under the cache key, base64url: how shared state (Redis) names a username or
   * an IP address without holding it. The label keeps these apart from credential keys (`basic`, `bearer`).
   */
  digest(label: string, value: string): string {
    return createHmac('sha256', this.#hmacKey).update(label).update('\0').update(value).digest('base64url');
  }

  /** A username's purge-index key: the same in every replica that shares `cacheKeySecret`. */
  userKey(username: string): string {
    return this.digest('user', normaliseUsername(username));
  }

  get(key: string): Outcome | undefined {
    return this.#lru.get(key)?.outcome;
  }

  /** Seconds a positive entry may live now: never past the credential's own expiry. */
  positiveTtlSeconds(identity: Identity, nowSeconds = Math.floor(Date.now() / 1000)): number {
    const untilExpiry = identity.expiresAt === undefined ? Infinity : identity.expiresAt - nowSeconds;
    return Math.max(0, Math.min(this.#options.ttlSeconds, untilExpiry));
  }

  set(key: string, outcome: Outcome, username: string | undefined): void {
    const ttl = outcome.kind === 'identity' ? this.positiveTtlSeconds(outcome.identity) : this.#options.negativeTtlSeconds;
    if (ttl <= 0) return;
    const name = username ?? (outcome.kind === 'identity' ? outcome.identity.username : undefined);
    const user = name === undefined ? undefined : this.userKey(name);
    this.#lru.set(key, { outcome, user }, { ttl: ttl * 1000 });
    if (user !== undefined) {
      let keys = this.#byUser.get(user);
      if (!keys) this.#byUser.set(user, (keys = new Set()));
      keys.add(key);
    }
  }

  /** Drops every entry of one user (after an ASP is revoked or a password changed). Returns how many. */
  purgeUser(username: string): number {
    return this.purgeUserKey(this.userKey(username));
  }

  /** `purgeUser` by the username's `userKey` (a purge broadcast by another replica). */
  purgeUserKey(userKey: string): number {
    const keys = this.#byUser.get(userKey);
    if (!keys) return 0;
    let purged = 0;
    for (const key of [...keys]) if (this.#lru.delete(key)) purged++;
    this.#byUser.delete(userKey);
    return purged;
  }

  /** Drops every decision (positive and negative; remembered ASPs stay). Returns how many. */
  clear(): number {
    const size = this.#lru.size;
    this.#lru.clear();
    this.#byUser.clear();
    return size;
  }

  /** Remember (by HMAC key) that this credential proved to be an ASP, so it is introspected first next time. */
  rememberAppPassword(key: string): void {
    if (this.#options.appPasswordMemorySeconds > 0) this.#appPasswords.set(key, true);
  }

  isKnownAppPassword(key: string): boolean {
    return this.#appPasswords.get(key) === true;
  }

  get size(): number {
    return this.#lru.size;
  }

  #unindex(key: string, user: string | undefined): void {
    if (user === undefined) return;
    const keys = this.#byUser.get(user);
    if (keys?.delete(key) && keys.size === 0) this.#byUser.delete(user);
  }
}

