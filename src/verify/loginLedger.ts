import { randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { AccountDirectory } from './accounts.js';
import { ledgerName, loginClass } from './strategy.js';

/**
 * Login protection: the AS never sees `budget` consecutive failed password grants for one account
 * caused by credgate. Auth0 blocks an account (from one IP) after 10; keep `budget` below your AS's
 * threshold, and below half of it where accounts log in by two names (username and e-mail) that
 * credgate may not have linked yet.
 *
 * THE RULE (one table; `src/state/redisLedger.ts` runs the same in Redis, and one test runs both):
 * - each ledger key (a login name, `ledgerName`) holds its confirmed consecutive failures, each with
 *   its place in the ledger's order of events and the class of the name typed (`loginClass`), the
 *   time of the last one, and its reservations: grants under way;
 * - an account's unsettled count is failures + reservations over the key and every alias linked to it;
 * - a grant for a password not known to be good is sent only while unsettled < budget − 2; one known
 *   to be good (it succeeded before) while unsettled < budget − 1: one slot stays for the real user;
 * - a reservation is made in the same step as the check (atomic), so concurrent requests cannot all
 *   pass the check before the first failure is recorded;
 * - a reservation settles as a success, a failure (one more failure), or "never sent" (released); one
 *   that never settles within `reservationMs` counts as a failure, since it may have reached the AS;
 * - a success clears what the AS cleared, and nothing more: the failures of the classes of names
 *   that reach its account (the name typed, and the account's `username`/`email` claims once `link`
 *   learns them) whose answers came BEFORE the success's own grant was sent. A failure answered while
 *   the success was under way may have been counted after it (answers can come back in another order
 *   than the AS counted them), and a failure under a look-alike name (another Unicode form, full
 *   width) may be another account's: both stay;
 * - failures are forgotten only `memoryMs` after the last one (the AS keeps its block that long;
 *   Infinity: never), or by a success or an admin reset. Nothing decays faster. "The last one" is the
 *   account's: the failures of all of its names are forgotten together, since the AS counts the
 *   account, not the name.
 */
export interface LedgerRule {
  readonly budget: number;
  /** Infinity: failures are never forgotten (only a success or an admin reset clears them). */
  readonly memoryMs: number;
  readonly reservationMs: number;
}

export interface LedgerFailure {
  /** When it was recorded, in the ledger's own order of events (time alone cannot: many happen in one ms). */
  readonly seq: number;
  /** `loginClass` of the name the grant was sent under. */
  readonly cls: string;
  /** The reservation it was, if it became a failure by falling due (a late success takes it back). */
  readonly id?: string;
}

export interface LedgerReservation {
  /** When it counts as a failure if not settled. */
  readonly until: number;
  readonly cls: string;
  /** When it was made, in the ledger's order of events. */
  readonly seq: number;
}

export interface LedgerEntry {
  failures: LedgerFailure[];
  lastFailureAt: number;
  reservations: Map<string, LedgerReservation>;
}

/** Highest unsettled count at which a grant may still be sent (exclusive). */
export function grantLimit(rule: Pick<LedgerRule, 'budget'>, knownGood: boolean): number {
  return knownGood ? rule.budget - 1 : rule.budget - 2;
}

/** Overdue reservations become failures (at the time they fell due; `seq` orders them among the ledger's events). */
export function settleOverdue(entry: LedgerEntry, now: number, seq: () => number): void {
  for (const [id, reservation] of entry.reservations) {
    if (reservation.until > now) continue;
    entry.reservations.delete(id);
    entry.failures.push({ seq: seq(), cls: reservation.cls, id });
    entry.lastFailureAt = Math.max(entry.lastFailureAt, reservation.until);
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
export function age(entries: readonly LedgerEntry[], now: number, rule: LedgerRule, seq: () => number): void {
  let last = 0;
  for (const entry of entries) {
    settleOverdue(entry, now, seq);
    if (entry.failures.length > 0) last = Math.max(last, entry.lastFailureAt);
  }
  const forget = now - last >= rule.memoryMs;
  for (const entry of entries) {
    if (entry.failures.length === 0) continue;
    if (forget) entry.failures = [];
    else entry.lastFailureAt = last;
  }
}

/** Drops the failures of `classes` recorded before `before` (a success's admission): what the AS cleared. */
export function clearBefore(entry: LedgerEntry, classes: ReadonlySet<string>, before: number): void {
  entry.failures = entry.failures.filter((f) => !(classes.has(f.cls) && f.seq < before));
}

export type SettleResult = 'success' | 'failure' | 'unsent';

export type Admission =
  | {
      readonly admitted: true;
      readonly key: string;
      readonly id: string;
      /** The admission's place in the ledger's order of events: a success clears failures recorded before it. */
      readonly seq: number;
      /** The class of the name typed (`loginClass`; in Redis its HMAC). */
      readonly cls: string;
    }
  | { readonly admitted: false; readonly retryAfterSeconds: number };

/** What the password-grant strategy asks of login protection (local, or shared through Redis). */
export interface LoginLedger {
  /** Checks and reserves in one step. `knownGood`: this exact password succeeded for this name before. */
  admit(username: string, knownGood: boolean): Promise<Admission>;
  /**
   * `subject`: the account the success was for, when known (the `link` that follows clears its other
   * names). A success clears the typed name's class at once.
   */
  settle(admission: Extract<Admission, { admitted: true }>, result: SettleResult, subject?: string): Promise<void>;
  /** Admin reset: forgets the failures of `username` and of every alias of its account. */
  reset(username: string): Promise<void>;
  /**
   * `subject` succeeded under these login names: they share its budget (locally the AccountDirectory
   * does it). Right after a successful password grant of `subject` (`settle`), the failures of these
   * names' classes answered before that success was sent are cleared too, as the AS cleared them: on
   * an account's first success credgate learns its other names (the `username`/`email` claims) only here.
   */
  link(subject: string, names: readonly string[]): Promise<void>;
}

/**
 * Where a replica without Redis keeps its ledger across restarts (`ledgerFile`): without it each
 * restart would give an attacker another `budget − 2` guesses. Written synchronously, before a
 * grant is sent, so that a crash loses nothing that reached the AS.
 */
export interface LedgerJournal {
  /** The entries as last written (reservations included: grants that were under way count once they fall due). */
  load(): Iterable<readonly [string, LedgerEntry]>;
  /** The entry of `key` as it is now; undefined: gone. */
  write(key: string, entry: LedgerEntry | undefined): void;
  /** The account links as last written: subject → ledger keys. */
  loadLinks(): Iterable<readonly [string, readonly string[]]>;
  /** `subject` succeeded under these ledger keys (written only when they add to what is known). */
  link(subject: string, keys: readonly string[]): void;
}

/** How long `throttled` says to wait while the account's budget is spent by settled failures. */
export const SPENT_RETRY_AFTER_SECONDS = 900;

let nextId = 0;

/** The rule in this process's memory. With several replicas, `RedisLoginLedger` shares it. */
export class LocalLoginLedger implements LoginLedger {
  readonly #entries: LRUCache<string, LedgerEntry>;
  /** The ledger's order of events: admissions and failures (time alone cannot order them: many happen in one ms). */
  #seq = 0;
  readonly #nextSeq = () => ++this.#seq;
  /** Subjects whose password grant succeeded and whose names are not linked yet → that grant's admission. */
  readonly #succeeded = new LRUCache<string, number>({ max: 1000 });
  /**
   * Prefix of this ledger's reservation ids, random per ledger: ids come back from `ledgerFile`
   * after a restart, and a new process's counter (and pid: 1 in a container) starts where the last
   * one's did, so `pid.counter` ids repeated and a new admission replaced a grant that was under way
   * at the crash (its failure was never counted).
   */
  readonly #idPrefix = randomBytes(6).toString('base64url');

  constructor(
    readonly rule: LedgerRule,
    private readonly accounts: AccountDirectory,
    maxTracked: number,
    private readonly now: () => number = Date.now,
    private readonly journal?: LedgerJournal,
  ) {
    // maxSize, not max: lru-cache preallocates `max` slots, and most deployments track few accounts.
    this.#entries = new LRUCache({ maxSize: maxTracked, sizeCalculation: () => 1 });
    for (const [key, entry] of journal?.load() ?? []) {
      this.#entries.set(key, entry);
      for (const f of entry.failures) this.#seq = Math.max(this.#seq, f.seq);
      for (const r of entry.reservations.values()) this.#seq = Math.max(this.#seq, r.seq);
    }
    for (const [subject, keys] of journal?.loadLinks() ?? []) accounts.link(subject, keys);
  }

  /** Records an entry's new state (or its end) in the journal, if any; drops an entry with nothing left. */
  #changed(key: string, entry: LedgerEntry | undefined): void {
    if (entry !== undefined && entry.failures.length === 0 && entry.reservations.size === 0) {
      this.#entries.delete(key);
      entry = undefined;
    }
    this.journal?.write(key, entry);
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
      unsettled += entry.failures.length + entry.reservations.size;
      inFlight += entry.reservations.size;
    }
    if (unsettled >= grantLimit(this.rule, knownGood)) {
      return { admitted: false, retryAfterSeconds: unsettled - inFlight >= grantLimit(this.rule, knownGood) ? SPENT_RETRY_AFTER_SECONDS : 1 };
    }
    const key = ledgerName(username);
    let entry = this.#entries.get(key);
    if (entry === undefined) this.#entries.set(key, (entry = { failures: [], lastFailureAt: 0, reservations: new Map() }));
    const id = `${this.#idPrefix}.${++nextId}`;
    const reservation = { until: now + this.rule.reservationMs, cls: loginClass(username), seq: this.#nextSeq() };
    entry.reservations.set(id, reservation);
    this.#changed(key, entry);
    return { admitted: true, key, id, seq: reservation.seq, cls: reservation.cls };
  }

  async settle(admission: Extract<Admission, { admitted: true }>, result: SettleResult, subject?: string): Promise<void> {
    const now = this.now();
    const entry = this.#entries.get(admission.key);
    if (entry) {
      // Only overdue reservations here: forgetting is decided for the whole account (`age`), at admission.
      settleOverdue(entry, now, this.#nextSeq);
      const open = entry.reservations.delete(admission.id);
      if (result === 'failure' && open) {
        entry.failures.push({ seq: this.#nextSeq(), cls: admission.cls });
        entry.lastFailureAt = now;
      } else if (result === 'success') {
        // One that fell due was counted as a failure: the AS says it was not one.
        if (!open) entry.failures = entry.failures.filter((f) => f.id !== admission.id);
        clearBefore(entry, new Set([admission.cls]), admission.seq);
      }
      this.#changed(admission.key, entry);
    }
    if (result === 'success' && subject !== undefined) this.#succeeded.set(subject, admission.seq);
  }

  async reset(username: string): Promise<void> {
    for (const key of this.accounts.aliasKeys(username)) {
      this.#entries.delete(key);
      this.journal?.write(key, undefined);
    }
  }

  async link(subject: string, names: readonly string[]): Promise<void> {
    this.accounts.link(subject, names);
    this.journal?.link(subject, names.map(ledgerName));
    const before = this.#succeeded.get(subject);
    if (before === undefined || names.length === 0) return;
    this.#succeeded.delete(subject);
    // The classes of every name of the account: the AS cleared the account's counter when it took
    // the success, so failures under these names that were answered before it was sent are gone there.
    const classesByKey = new Map<string, Set<string>>();
    for (const name of names) {
      const key = ledgerName(name);
      let classes = classesByKey.get(key);
      if (classes === undefined) classesByKey.set(key, (classes = new Set()));
      classes.add(loginClass(name));
    }
    for (const [key, classes] of classesByKey) {
      const entry = this.#entries.get(key);
      if (entry === undefined) continue;
      clearBefore(entry, classes, before);
      this.#changed(key, entry);
    }
  }

  /** For tests and metrics: the unsettled count of a name's account. */
  unsettled(username: string): number {
    const entries = this.#account(username);
    age(entries, this.now(), this.rule, this.#nextSeq);
    return entries.reduce((n, entry) => n + entry.failures.length + entry.reservations.size, 0);
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
