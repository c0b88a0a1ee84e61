import { LRUCache } from 'lru-cache';
import type { Identity } from './types.js';

interface Entry {
  readonly identity: Identity;
  /** Epoch ms until which the identity was fresh in the decision cache. */
  readonly freshUntil: number;
}

/**
 * Stale-if-error (`staleIfErrorSeconds`): verified identities kept a while past their cache
 * lifetime, keyed by the same HMAC as the decision cache, to be used ONLY when the AS cannot be
 * asked. Never a denial (only identities are remembered), never past the credential's own `exp`,
 * and forgotten as soon as the AS denies the credential or an admin purges the user.
 *
 * The risk, stated in docs/security.md: a credential revoked at the AS (an ASP, a changed password)
 * keeps working through an AS outage for up to `cacheTtlSeconds + staleIfErrorSeconds`.
 */
export class StaleIdentities {
  readonly #lru: LRUCache<string, Entry>;

  constructor(
    private readonly graceSeconds: number,
    maxEntries: number,
  ) {
    this.#lru = new LRUCache<string, Entry>({ max: maxEntries, ttl: 1000, ttlAutopurge: false });
  }

  /** Remembers an identity just verified; it was fresh for `freshSeconds` (its decision-cache lifetime). */
  remember(key: string, identity: Identity, freshSeconds: number, now = Date.now()): void {
    const freshUntil = now + freshSeconds * 1000;
    let until = freshUntil + this.graceSeconds * 1000;
    if (identity.expiresAt !== undefined) until = Math.min(until, identity.expiresAt * 1000);
    if (until <= now) return;
    this.#lru.set(key, { identity, freshUntil }, { ttl: until - now });
  }

  /** The identity, if it left the cache less than `graceSeconds` ago and has not expired itself. */
  get(key: string, now = Date.now()): { identity: Identity; staleForSeconds: number } | undefined {
    const entry = this.#lru.get(key);
    if (!entry) return undefined;
    if (entry.identity.expiresAt !== undefined && entry.identity.expiresAt * 1000 <= now) return undefined;
    return { identity: entry.identity, staleForSeconds: Math.max(0, Math.round((now - entry.freshUntil) / 1000)) };
  }

  /** The AS said no: never serve this credential from memory again. */
  forget(key: string): void {
    this.#lru.delete(key);
  }

  /** Drops every entry of these accounts (admin purge). Rare, so a scan is fine. */
  purgeSubjects(subjects: ReadonlySet<string>): number {
    let purged = 0;
    for (const [key, entry] of [...this.#lru.entries()]) if (subjects.has(entry.identity.subject) && this.#lru.delete(key)) purged++;
    return purged;
  }
}
