import { hash, randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { ledgerName } from './strategy.js';
import type { Credentials, CredentialType, Identity } from './types.js';

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

/** Bytes of HMAC-SHA256 kept in a cache key: 128 bits (22 base64url characters; SP 800-107 allows truncation). */
const KEY_BYTES = 16;
const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
/** Characters of KEY_BYTES bytes in base64url (22). */
const KEY_CHARS = Math.ceil((KEY_BYTES * 8) / 6);
/** A base64url character → the one with only its top two bits: the last character of 16 bytes carries two bits (16 = 3 × 5 + 1). */
const LAST_OF_16 = new Map([...BASE64URL].map((c, i) => [c, BASE64URL[i & 0b110000]!]));
const SHA256_BLOCK = 64;

/**
 * The cache key: HMAC-SHA256 (RFC 2104) of the input's UTF-8 bytes, its first KEY_BYTES bytes in
 * base64url — the same string as `createHmac('sha256', key).update(input).digest().toString('base64url', 0, 16)`
 * (cache.test.ts checks the two agree, so keys in shared state stay valid across versions), at less
 * than half the CPU (issue #17): the padded keys are made once, the inner input is written into a
 * buffer kept for the next call, and the two hashes are one-shot `crypto.hash` calls that return
 * strings, where createHmac builds a stream object and a Buffer per call.
 */
class CacheKeyHmac {
  #inner: Buffer;
  readonly #outer = Buffer.alloc(SHA256_BLOCK + 32);

  constructor(key: Buffer) {
    const block = Buffer.alloc(SHA256_BLOCK);
    (key.length > SHA256_BLOCK ? hash('sha256', key, 'buffer') : key).copy(block);
    this.#inner = Buffer.alloc(SHA256_BLOCK + 1024);
    for (let i = 0; i < SHA256_BLOCK; i++) {
      this.#inner[i] = block[i]! ^ 0x36;
      this.#outer[i] = block[i]! ^ 0x5c;
    }
  }

  /** The first KEY_BYTES bytes of the HMAC, base64url (a cache key). */
  of(input: string): string {
    const mac = this.full(input);
    return mac.slice(0, KEY_CHARS - 1) + LAST_OF_16.get(mac[KEY_CHARS - 1]!)!;
  }

  /** The whole HMAC, base64url (43 characters): `createHmac('sha256', key).update(input).digest('base64url')`. */
  full(input: string): string {
    // A UTF-16 unit is at most 3 bytes of UTF-8.
    if (this.#inner.length < SHA256_BLOCK + input.length * 3) {
      const grown = Buffer.alloc(SHA256_BLOCK + input.length * 3);
      this.#inner.copy(grown, 0, 0, SHA256_BLOCK);
      this.#inner = grown;
    }
    const length = this.#inner.write(input, SHA256_BLOCK, 'utf8');
    this.#outer.write(hash('sha256', this.#inner.subarray(0, SHA256_BLOCK + length), 'binary'), SHA256_BLOCK, 'latin1');
    return hash('sha256', this.#outer, 'base64url');
  }
}
/** One CacheKeyHmac per key (the cache's own, kept here so that the cache's fields stay as they were). */
const cacheKeyHmacs = new WeakMap<Buffer, CacheKeyHmac>();
/** A negative entry whose username is not known (a bearer token): no purge reaches it. */
const NO_USER = -1;
/** At most this many distinct scope lists and audiences are shared between entries; beyond, each entry keeps its own. */
const MAX_INTERNED = 4096;

/** The purge tag of a `userKey`: its first 30 bits, a small integer that V8 stores inline. */
function tagOf(userKey: string): number {
  return Buffer.from(userKey.slice(0, 8), 'base64url').readUInt32BE(0) >>> 2;
}

/** The cache's clock: tenths of a second on the monotonic clock, a small integer for years of uptime. */
function now(): number {
  return Math.floor(performance.now() / 100);
}

/**
 * A positive entry: the identity's fields in one object, with its user's purge tag and the time it
 * stops being served. Scope lists and audiences are shared between entries; nothing else refers
 * to the object, so it is the whole cost of an entry beside its key and the subject and username strings.
 */
class CachedIdentity implements Identity {
  readonly #tag: number;
  readonly #until: number;
  constructor(
    readonly subject: string,
    readonly username: string | undefined,
    readonly credential: CredentialType,
    readonly scopes: readonly string[],
    readonly audience: string,
    readonly expiresAt: number | undefined,
    tag: number,
    until: number,
  ) {
    this.#tag = tag;
    this.#until = until;
  }

  static tag(entry: CachedIdentity): number {
    return entry.#tag;
  }

  static until(entry: CachedIdentity): number {
    return entry.#until;
  }
}

/** A negative entry: a known-wrong credential, with its username's purge tag. */
class Denied {
  constructor(
    readonly tag: number,
    readonly until: number,
  ) {}
}

type Entry = CachedIdentity | Denied;
const tagOfEntry = (entry: Entry) => (entry instanceof Denied ? entry.tag : CachedIdentity.tag(entry));
const untilOfEntry = (entry: Entry) => (entry instanceof Denied ? entry.until : CachedIdentity.until(entry));

/**
 * Remembers outcomes by an HMAC of (credential kind, username, secret, audience): the cache never
 * holds a password or token, and its keys cannot be reversed without the HMAC key. It caches the
 * *identity*, not the allow: scopes are checked on every request, so a request needing more can
 * never ride on a cached answer for less (the CVE-2021-32701 class). Positive entries live
 * min(ttlSeconds, exp − now); nothing is cached for upstream errors (the caller never stores them).
 *
 * Memory (issue 10: ≤ 450 bytes resident per entry at 1M entries, `npm run bench`): a key is 128
 * bits of the HMAC (a 22-character string); a positive entry is one flat object whose scope list
 * and audience are shared with every entry that has the same; expiry is a small integer in the
 * entry rather than lru-cache's per-slot TTL arrays. The purge index maps a 30-bit tag of each
 * username's `userKey` to its entries' keys (the same strings the cache holds): a tag shared by
 * chance purges someone else's entries too, which costs them one more question to the AS and
 * nothing else.
 */
export class CredentialCache {
  readonly #hmacKey: Buffer;
  readonly #lru: LRUCache<string, Entry>;
  readonly #options: CacheOptions;
  /** Purge tag → the key of its one entry, or the keys of several (most users have one or two). */
  readonly #byTag = new Map<number, string | Set<string>>();
  /** HMAC keys of credentials that turned out to be ASPs; lives much longer than decisions. Not
   * preallocated (`maxSize` rather than `max`): it is usually far smaller than the decision cache. */
  readonly #appPasswords: LRUCache<string, true>;
  readonly #knownPasswords: LRUCache<string, true>;
  readonly #scopeLists = new Map<string, readonly string[]>();
  readonly #audiences = new Map<string, string>();

  constructor(options: CacheOptions) {
    this.#options = options;
    this.#hmacKey = options.keySecret ? decodeKey(options.keySecret) : randomBytes(32);
    this.#lru = new LRUCache<string, Entry>({
      max: options.maxEntries,
      dispose: (entry, key, reason) => {
        this.#unindex(tagOfEntry(entry), key);
        if (reason === 'evict') options.onEvict?.();
      },
    });
    this.#appPasswords = new LRUCache<string, true>({ maxSize: options.maxEntries, sizeCalculation: () => 1, ttl: Math.max(options.appPasswordMemorySeconds, 1) * 1000 });
    this.#knownPasswords = new LRUCache<string, true>({ maxSize: options.maxEntries, sizeCalculation: () => 1, ttl: Math.max(options.appPasswordMemorySeconds, 1) * 1000 });
  }

  /**
   * The username goes in exactly as typed: an entry made under one spelling never answers for
   * another (`jos\u00e9` and `jose\u0301` may be two accounts at the AS).
   */
  keyFor(credentials: Credentials, audience: string): string {
    const input = credentials.kind === 'basic' ? `basic\0${credentials.username}\0${credentials.password}\0${audience}` : `bearer\0\0${credentials.token}\0${audience}`;
    return this.#hmac().of(input);
  }

  #hmac(): CacheKeyHmac {
    let hmac = cacheKeyHmacs.get(this.#hmacKey);
    if (hmac === undefined) cacheKeyHmacs.set(this.#hmacKey, (hmac = new CacheKeyHmac(this.#hmacKey)));
    return hmac;
  }

  /**
   * HMAC of a labelled value under the cache key, base64url: how shared state (Redis) names a username or
   * an IP address without holding it. The label keeps these apart from credential keys (`basic`, `bearer`).
   */
  digest(label: string, value: string): string {
    // The same string as createHmac('sha256', key).update(`${label}\0${value}`).digest('base64url')
    // (cache.test.ts), at the cost of two one-shot hashes: every new positive entry names its subject.
    return this.#hmac().full(`${label}\0${value}`);
  }

  /** A login name's purge key (every spelling a login could fold to): the same in every replica that shares `cacheKeySecret`. */
  userKey(username: string): string {
    return this.digest('user', ledgerName(username));
  }

  /** An account's purge key, by the AS's subject. */
  subjectKey(subject: string): string {
    return this.digest('subject', subject);
  }

  /** A cached identity, `'denied'` for a known-wrong credential, or undefined. */
  get(key: string): Identity | 'denied' | undefined {
    const entry = this.#lru.get(key);
    if (entry === undefined) return undefined;
    if (untilOfEntry(entry) <= now()) {
      this.#lru.delete(key);
      return undefined;
    }
    return entry instanceof Denied ? 'denied' : entry;
  }

  /** Seconds a positive entry may live now: never past the credential's own expiry. */
  positiveTtlSeconds(identity: Identity, nowSeconds = Math.floor(Date.now() / 1000)): number {
    const untilExpiry = identity.expiresAt === undefined ? Infinity : identity.expiresAt - nowSeconds;
    return Math.max(0, Math.min(this.#options.ttlSeconds, untilExpiry));
  }

  /**
   * A positive entry is filed under its account (the subject), so that a purge of the account drops
   * it whatever name it was made under; a negative one under the name that was typed.
   */
  set(key: string, outcome: Outcome, username: string | undefined): void {
    const ttl = outcome.kind === 'identity' ? this.positiveTtlSeconds(outcome.identity) : this.#options.negativeTtlSeconds;
    if (ttl <= 0) return;
    const tag = outcome.kind === 'identity' ? tagOf(this.subjectKey(outcome.identity.subject)) : username === undefined ? NO_USER : tagOf(this.userKey(username));
    const until = now() + ttl * 10;
    // Set first: replacing an entry disposes (unindexes) the old one under this key.
    this.#lru.set(key, outcome.kind === 'identity' ? this.#compact(outcome.identity, tag, until) : new Denied(tag, until));
    if (tag !== NO_USER) {
      const keys = this.#byTag.get(tag);
      if (keys === undefined) this.#byTag.set(tag, key);
      else if (typeof keys === 'string') {
        if (keys !== key) this.#byTag.set(tag, new Set([keys, key]));
      } else keys.add(key);
    }
  }

  /** Drops every entry filed under one login name (negative entries). Returns how many. */
  purgeUser(username: string): number {
    return this.purgeUserKey(this.userKey(username));
  }

  /** Drops every positive entry of one account, whatever name or credential it was made with. */
  purgeSubject(subject: string): number {
    return this.purgeUserKey(this.subjectKey(subject));
  }

  /** A purge by `userKey` or `subjectKey` (also a purge broadcast by another replica). */
  purgeUserKey(userKey: string): number {
    const keys = this.#byTag.get(tagOf(userKey));
    if (keys === undefined) return 0;
    let purged = 0;
    for (const key of typeof keys === 'string' ? [keys] : [...keys]) if (this.#lru.delete(key)) purged++;
    return purged;
  }

  /** Drops every decision (positive and negative; remembered ASPs stay). Returns how many. */
  clear(): number {
    const size = this.#lru.size;
    this.#lru.clear();
    this.#byTag.clear();
    return size;
  }

  /** Remember (by HMAC key) that this password succeeded at the password grant: while the account's
   * login budget is spent by someone else's guesses, it may still be tried (it is no guess). */
  rememberPassword(key: string): void {
    if (this.#options.appPasswordMemorySeconds > 0) this.#knownPasswords.set(key, true);
  }

  forgetPassword(key: string): void {
    this.#knownPasswords.delete(key);
  }

  isKnownPassword(key: string): boolean {
    return this.#knownPasswords.get(key) === true;
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

  #compact(identity: Identity, tag: number, until: number): CachedIdentity {
    return new CachedIdentity(identity.subject, identity.username, identity.credential, this.#shared(identity.scopes), this.#audience(identity.audience), identity.expiresAt, tag, until);
  }

  #unindex(tag: number, key: string): void {
    const keys = this.#byTag.get(tag);
    if (keys === undefined) return;
    if (typeof keys === 'string') {
      if (keys === key) this.#byTag.delete(tag);
      return;
    }
    keys.delete(key);
    if (keys.size === 1) this.#byTag.set(tag, keys.values().next().value!);
    else if (keys.size === 0) this.#byTag.delete(tag);
  }

  #shared(scopes: readonly string[]): readonly string[] {
    const name = scopes.join(' ');
    let shared = this.#scopeLists.get(name);
    if (shared === undefined) {
      shared = Object.freeze([...scopes]);
      if (this.#scopeLists.size < MAX_INTERNED) this.#scopeLists.set(name, shared);
    }
    return shared;
  }

  #audience(audience: string): string {
    const shared = this.#audiences.get(audience);
    if (shared !== undefined) return shared;
    if (this.#audiences.size < MAX_INTERNED) this.#audiences.set(audience, audience);
    return audience;
  }
}
