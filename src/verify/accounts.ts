import { LRUCache } from 'lru-cache';
import { ledgerName } from './strategy.js';

/**
 * Which login names credgate has seen succeed for which account (subject), by `ledgerName`. Learnt
 * only from verified successes: the name a password grant was accepted for, and the username claims
 * (`username`, `email`) of a verified token or ASP. Login protection counts an account's aliases
 * against one budget, and an admin purge of one name reaches every alias of its account.
 *
 * A name seen with two subjects (two accounts whose names fold alike, `José`/`JOSÉ`) stays linked to
 * both: their budgets are counted together. Which failures a success clears is decided by the class
 * of the name each was typed under (`loginClass`, see the login ledger), not by this directory.
 */
export class AccountDirectory {
  readonly #subjectsByName: LRUCache<string, Set<string>>;
  readonly #namesBySubject: LRUCache<string, Set<string>>;
  /** Subject → the AS's own username claim for it, from a verified token or introspection. */
  readonly #canonical: LRUCache<string, string>;

  constructor(maxAccounts: number) {
    // maxSize, not max: lru-cache preallocates `max` slots.
    this.#subjectsByName = new LRUCache({ maxSize: maxAccounts * 2, sizeCalculation: () => 1 });
    this.#namesBySubject = new LRUCache({ maxSize: maxAccounts, sizeCalculation: () => 1 });
    this.#canonical = new LRUCache({ maxSize: maxAccounts, sizeCalculation: () => 1 });
  }

  /** The AS's username claim for `subject`, learnt from a verified token or introspection answer. */
  canonicalName(subject: string): string | undefined {
    return this.#canonical.get(subject);
  }

  rememberCanonicalName(subject: string, username: string): void {
    this.#canonical.set(subject, username);
  }

  /** Records that `subject` proved itself under each of `names` (login names, any spelling). */
  link(subject: string, names: readonly string[]): void {
    let known = this.#namesBySubject.get(subject);
    if (known === undefined) this.#namesBySubject.set(subject, (known = new Set()));
    for (const name of names) {
      const key = ledgerName(name);
      known.add(key);
      let subjects = this.#subjectsByName.get(key);
      if (subjects === undefined) this.#subjectsByName.set(key, (subjects = new Set()));
      subjects.add(subject);
    }
  }

  /** Subjects a login name has been seen to belong to. */
  subjectsOf(name: string): readonly string[] {
    return [...(this.#subjectsByName.get(ledgerName(name)) ?? [])];
  }

  /** Ledger keys of a subject's login names. */
  namesOf(subject: string): readonly string[] {
    return [...(this.#namesBySubject.get(subject) ?? [])];
  }

  /** The ledger key of `name` and of every alias of every account it names: one budget for them all. */
  aliasKeys(name: string): string[] {
    const key = ledgerName(name);
    const keys = new Set([key]);
    for (const subject of this.#subjectsByName.get(key) ?? []) for (const alias of this.#namesBySubject.get(subject) ?? []) keys.add(alias);
    return [...keys];
  }
}
