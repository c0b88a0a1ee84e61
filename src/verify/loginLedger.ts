import { LRUCache } from 'lru-cache';
import type { AccountDirectory } from './accounts.js';
import { ledgerName } from './strategy.js';

/**
 * Login protection: the AS never sees `budget` consecutive failed password grants for one account
 * caused by credgate. Auth0 blocks an account (from one IP) after 10; keep `budget` below your AS's
 * threshold, and below half of it where accounts log in by two names (username and e-mail) that
 * credgate may not have linked yet.
 *
 * THE RULE (one table; `src/state/redisLedger.ts` runs the same in Redis, and one test runs both):
 * - each ledger key (a login name, `ledgerName`) holds its confirmed consecutive failures, the time
 *   of the last one, and its reservations: grants under way;
 * - an account's unsettled count is failures + reservations over the key and every alias linked to it;
 * - a grant for a password not known to be good is sent only while unsettled < budget − 2; one known
 *   to be good (it succeeded before) while unsettled < budget − 1: one slot stays for the real user;
 * - a reservation is made in the same step as the check (atomic), so concurrent requests cannot all
 *   pass the check before the first failure is recorded;
 * - a reservation settles as a success (clears the account's keys, as the AS clears its counter),
 *   a failure (one more failure), or "never sent" (released); one that never settles within
 *   `reservationMs` counts as a failure, since it may have reached the AS;
 * - failures are forgotten only `memoryMs` after the last one (the AS keeps its block that long), or
 *   by a success or an admin reset. Nothing decays faster. "The last one" is the account's: the
 *   failures of all of its names are forgotten together, since the AS counts the account, not the name.
 */
export interface LedgerRule {
  readonly budget: number;
  readonly memoryMs: number;
  readonly reservationMs: number;
}

export interface LedgerEntry {
  failures: number;
  lastFailureAt: number;
  /** When the last failure was recorded, in the ledger's own order of events (see `link`). */
  lastFailureSeq?: number;
  /** Reservation id → the time it counts as a failure if not settled. */
  reservations: Map<string, number>;
}

/** Highest unsettled count at which a grant may still be sent (exclusive). */
export function grantLimit(rule: Pick<LedgerRule, 'budget'>, knownGood: boolean): number {
  return knownGood ? rule.budget - 1 : rule.budget - 2;
}

/** Overdue reservations become failures (at the time they fell due; `seq` orders them among the ledger's events). */
export function settleOverdue(entry: LedgerEntry, now: number, seq?: () => number): void {
  for (const [id, until] of entry.reservations) {
    if (until > now) continue;
    entry.reservations.delete(id);
    entry.failures += 1;
    entry.lastFailureAt = Math.max(entry.lastFailureAt, until);
    if (seq) entry.lastFailureSeq = seq();
  }
}

/**
 * Applies time to an account, given the entries of all of its names: overdue reservations become
 * failures; the failures are forgotten `memoryMs` after the last failure of ANY of the names, all
 * together. Forgetting one name's older failures while another name's keep the account's run alive
 * at the AS would let an attacker stagger the names (two guesses under one name, one under the other
 * a few weeks later, two more under the first once its own are 30 days old: five at the AS). Each
 * entry keeps the account's last failure time, so that it is not forgotten early even if it is later
 * read without its aliases.
 */
export function age(entries: readonly LedgerEntry[], now: number, rule: LedgerRule, seq?: () => number): void {
  let last = 0;
  for (const entry of entries) {
    settleOverdue(entry, now, seq);
    if (entry.failures > 0) last = Math.max(last, entry.lastFailureAt);
  }
  const forget = now - last >= rule.memoryMs;
  for (const entry of entries) {
    if (entry.failures === 0) continue;
    if (forget) entry.failures = 0;
    else entry.lastFailureAt = last;
  }
}

export type SettleResult = 'success' | 'failure' | 'unsent';

/** One reservation's settlement: a success clears, a failure adds one, "unsent" only releases. */
export function settleEntry(entry: LedgerEntry, id: string, result: SettleResult, now: number, seq?: number): void {
  const open = entry.reservations.delete(id);
  if (result === 'success') {
    entry.failures = 0;
  } else if (result === 'failure' && open) {
    // A reservation already overdue was counted as a failure by `age`; it is not counted twice.
    entry.failures += 1;
    entry.lastFailureAt = now;
    entry.lastFailureSeq = seq;
  }
}

export type Admission =
  | { readonly admitted: true; readonly key: string; readonly id: string }
  | { readonly admitted: false; readonly retryAfterSeconds: number };

/** What the password-grant strategy asks of login protection (local, or shared through Redis). */
export interface LoginLedger {
  /** Checks and reserves in one step. `knownGood`: this exact password succeeded for this name before. */
  admit(username: string, knownGood: boolean): Promise<Admission>;
  /** `subject`: the account the success was for, when known (clears its aliases too). */
  settle(admission: Extract<Admission, { admitted: true }>, result: SettleResult, subject?: string, username?: string): Promise<void>;
  /** Admin reset: forgets the failures of `username` and of every alias of its account. */
  reset(username: string): Promise<void>;
  /**
   * `subject` succeeded under these login names: they share its budget (locally the AccountDirectory
   * does it). Right after a successful password grant of `subject` (`settle`), failures its names
   * had before that success are cleared too, as the AS cleared them: on an account's first success
   * credgate learns its other names (the `username`/`email` claims) only here.
   */
  link(subject: string, names: readonly string[]): Promise<void>;
}

/** How long `throttled` says to wait while the account's budget is spent by settled failures. */
export const SPENT_RETRY_AFTER_SECONDS = 900;

let nextId = 0;

/** The rule in this process's memory. With several replicas, `RedisLoginLedger` shares it. */
export class LocalLoginLedger implements LoginLedger {
  readonly #entries: LRUCache<string, LedgerEntry>;
  /** Failures recorded so far: orders failures and successes (time alone cannot: many happen in one ms). */
  #seq = 0;
  readonly #nextSeq = () => ++this.#seq;
  /** Subjects whose password grant succeeded and whose names are not linked yet → `#seq` at that success. */
  readonly #succeeded = new LRUCache<string, number>({ max: 1000 });

  constructor(
    readonly rule: LedgerRule,
    private readonly accounts: AccountDirectory,
    maxTracked: number,
    private readonly now: () => number = Date.now,
  ) {
    // maxSize, not max: lru-cache preallocates `max` slots, and most deployments track few accounts.
    this.#entries = new LRUCache({ maxSize: maxTracked, sizeCalculation: () => 1 });
  }

  async admit(username: string, knownGood: boolean): Promise<Admission> {
    return this.admitNow(username, knownGood);
  }

  /** Synchronous: nothing can run between the check and the reservation. */
  admitNow(username: string, knownGood: boolean): Admission {
    const now = this.now();
    let unsettled = 0;
    let inFlight = 0;
    const entries = this.#account(username);
    age(entries, now, this.rule, this.#nextSeq);
    for (const entry of entries) {
      unsettled += entry.failures + entry.reservations.size;
      inFlight += entry.reservations.size;
    }
    if (unsettled >= grantLimit(this.rule, knownGood)) {
      return { admitted: false, retryAfterSeconds: unsettled - inFlight >= grantLimit(this.rule, knownGood) ? SPENT_RETRY_AFTER_SECONDS : 1 };
    }
    const key = ledgerName(username);
    let entry = this.#entries.get(key);
    if (entry === undefined) this.#entries.set(key, (entry = { failures: 0, lastFailureAt: 0, reservations: new Map() }));
    const id = `${process.pid}.${++nextId}`;
    entry.reservations.set(id, now + this.rule.reservationMs);
    return { admitted: true, key, id };
  }

  async settle(admission: Extract<Admission, { admitted: true }>, result: SettleResult, subject?: string, username?: string): Promise<void> {
    const now = this.now();
    const entry = this.#entries.get(admission.key);
    if (entry) {
      // Only overdue reservations here: forgetting is decided for the whole account (`age`), at admission.
      settleOverdue(entry, now, this.#nextSeq);
      settleEntry(entry, admission.id, result === 'success' ? 'unsent' : result, now, this.#nextSeq());
    }
    if (result !== 'success') return;
    if (subject !== undefined) this.#succeeded.set(subject, this.#seq);
    // The AS clears the account's counter on a success: so does credgate, for every key that names
    // only this account (a name shared with another account keeps its failures).
    for (const key of this.accounts.clearedBySuccess(subject, username ?? admission.key)) {
      const cleared = this.#entries.get(key);
      if (cleared === undefined) continue;
      cleared.failures = 0;
      if (cleared.reservations.size === 0) this.#entries.delete(key);
    }
  }

  async reset(username: string): Promise<void> {
    for (const key of this.accounts.aliasKeys(username)) this.#entries.delete(key);
  }

  async link(subject: string, names: readonly string[]): Promise<void> {
    this.accounts.link(subject, names);
    const at = this.#succeeded.get(subject);
    if (at === undefined || names.length === 0) return;
    this.#succeeded.delete(subject);
    // Failures recorded before the success (never one that came after it, or a grant still under way)
    // of every name that names only this account.
    for (const key of this.accounts.clearedBySuccess(subject, names[0]!)) {
      const entry = this.#entries.get(key);
      if (entry === undefined || entry.failures === 0 || (entry.lastFailureSeq ?? 0) > at) continue;
      entry.failures = 0;
      if (entry.reservations.size === 0) this.#entries.delete(key);
    }
  }

  /** For tests and metrics: the unsettled count of a name's account. */
  unsettled(username: string): number {
    const entries = this.#account(username);
    age(entries, this.now(), this.rule, this.#nextSeq);
    return entries.reduce((n, entry) => n + entry.failures + entry.reservations.size, 0);
  }

  /** The entries of a name and of every alias of its account. */
  #account(username: string): LedgerEntry[] {
    const entries: LedgerEntry[] = [];
    for (const key of this.accounts.aliasKeys(username)) {
      const entry = this.#entries.get(key);
      if (entry !== undefined) entries.push(entry);
    }
    return entries;
  }
}
