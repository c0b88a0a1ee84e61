import { appendFileSync, closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { LRUCache } from 'lru-cache';
import { ConfigError } from '../errors.js';
import type { Logger } from '../log.js';
import type { LedgerEntry, LedgerFailure, LedgerJournal, LedgerReservation } from '../verify/loginLedger.js';

/** Compaction once the file holds this many lines more than there are entries (and at every start). */
const COMPACT_SLACK = 50_000;

interface EntryLine {
  /** Ledger key (a login name folded by `ledgerName`). */
  k: string;
  /** The entry; null: gone. */
  e: { f: LedgerFailure[]; l: number; r: [string, LedgerReservation][] } | null;
}

interface LinkLine {
  /** A subject (account) that succeeded… */
  s: string;
  /** …under these ledger keys: they share its budget. */
  n: string[];
}

type Line = EntryLine | LinkLine;

/**
 * The login ledger of a replica without Redis, in a file (`ledgerFile`): one JSON line per change
 * of an account's entry, appended synchronously before the grant it reserves is sent (a crash of the
 * process loses nothing written; the page cache is flushed by the kernel, and fsync'd at compaction).
 * At start-up the last line of each key wins, the file is rewritten with only those (a temporary file
 * renamed over it), and lines that do not parse (the tail of a write cut by a crash) are skipped.
 * The account links (which names succeeded for one subject, so that they share its budget) are kept
 * too, one line per subject whose names grew: without them a restart would give each alias of an
 * account a budget of its own again. The most recent `maxLinks` subjects are kept.
 * Created with mode 0600: it names login names and subjects, never a password.
 */
export class LedgerFile implements LedgerJournal {
  #lines = 0;
  #live = new Set<string>();
  /** Subject → ledger keys, as written (the most recent subjects). */
  readonly #links: LRUCache<string, Set<string>>;

  constructor(
    private readonly path: string,
    private readonly log: Logger,
    maxLinks = 100_000,
  ) {
    // maxSize, not max: lru-cache preallocates `max` slots.
    this.#links = new LRUCache({ maxSize: maxLinks, sizeCalculation: () => 1 });
  }

  /** Reads and compacts the file; a file that cannot be read or written stops start-up (ConfigError naming the key). */
  load(): [string, LedgerEntry][] {
    try {
      const { entries, skipped } = this.#read();
      if (skipped > 0) this.log.warn({ ledgerFile: this.path, skipped }, 'login ledger file: lines that do not parse were skipped (a write cut short by a crash?)');
      this.#compact(entries);
      return [...entries];
    } catch (err) {
      throw new ConfigError(`ledgerFile ${this.path} cannot be used: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 'ledgerFile');
    }
  }

  /** The account links read by `load`, oldest first. */
  loadLinks(): [string, string[]][] {
    return [...this.#linkLines()].map((line) => [line.s, line.n]);
  }

  link(subject: string, keys: readonly string[]): void {
    let known = this.#links.get(subject);
    const added = keys.filter((key) => !known?.has(key));
    if (added.length === 0) return;
    if (known === undefined) this.#links.set(subject, (known = new Set()));
    for (const key of added) known.add(key);
    this.#append(JSON.stringify({ s: subject, n: [...known] } satisfies LinkLine));
  }

  write(key: string, entry: LedgerEntry | undefined): void {
    if (entry === undefined) {
      if (!this.#live.delete(key)) return;
    } else {
      this.#live.add(key);
    }
    this.#append(serialise(key, entry));
  }

  /** The links, least recently written first. */
  *#linkLines(): Generator<LinkLine> {
    for (const subject of this.#links.rkeys()) yield { s: subject, n: [...(this.#links.peek(subject) ?? [])] };
  }

  #append(line: string): void {
    appendFileSync(this.path, line + '\n', { mode: 0o600 });
    if (++this.#lines > this.#live.size + this.#links.size + COMPACT_SLACK) this.#compact(this.#read().entries);
  }

  /** The last line of each key; lines that do not parse are counted and skipped. */
  #read(): { entries: Map<string, LedgerEntry>; skipped: number } {
    let text = '';
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const entries = new Map<string, LedgerEntry>();
    let skipped = 0;
    for (const raw of text.split('\n')) {
      if (raw.trim() === '') continue;
      const line = parse(raw);
      if (line === undefined) skipped++;
      else if ('s' in line) {
        const known = this.#links.get(line.s) ?? new Set<string>();
        for (const key of line.n) known.add(key);
        this.#links.set(line.s, known);
      } else if (line.e === null) entries.delete(line.k);
      else entries.set(line.k, { failures: line.e.f, lastFailureAt: line.e.l, reservations: new Map(line.e.r) });
    }
    return { entries, skipped };
  }

  /** Rewrites the file with one line per live entry: a temporary file, fsync'd, renamed over it. */
  #compact(entries: ReadonlyMap<string, LedgerEntry>): void {
    mkdirSync(dirname(this.path), { recursive: true });
    const temporary = `${this.path}.${process.pid}.tmp`;
    const fd = openSync(temporary, 'w', 0o600);
    try {
      for (const [key, entry] of entries) writeSync(fd, serialise(key, entry) + '\n');
      for (const line of this.#linkLines()) writeSync(fd, JSON.stringify(line) + '\n');
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, this.path);
    this.#live = new Set(entries.keys());
    this.#lines = entries.size + this.#links.size;
  }
}

function serialise(key: string, entry: LedgerEntry | undefined): string {
  const line: EntryLine = { k: key, e: entry === undefined ? null : { f: entry.failures, l: entry.lastFailureAt, r: [...entry.reservations] } };
  return JSON.stringify(line);
}

const isNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** One line, checked field by field; undefined for anything else. */
function parse(raw: string): Line | undefined {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const { k, e, s, n } = value as Record<string, unknown>;
  if (typeof s === 'string') return Array.isArray(n) && n.every((x) => typeof x === 'string') ? { s, n: n as string[] } : undefined;
  if (typeof k !== 'string') return undefined;
  if (e === null) return { k, e: null };
  if (typeof e !== 'object' || e === undefined) return undefined;
  const { f, l, r } = e as Record<string, unknown>;
  if (!Array.isArray(f) || !isNumber(l) || !Array.isArray(r)) return undefined;
  const failures: LedgerFailure[] = [];
  for (const x of f as unknown[]) {
    const { seq, cls, id } = (x ?? {}) as Record<string, unknown>;
    if (!isNumber(seq) || typeof cls !== 'string' || (id !== undefined && typeof id !== 'string')) return undefined;
    failures.push(id === undefined ? { seq, cls } : { seq, cls, id });
  }
  const reservations: [string, LedgerReservation][] = [];
  for (const x of r as unknown[]) {
    if (!Array.isArray(x) || typeof x[0] !== 'string') return undefined;
    const { until, cls, seq } = (x[1] ?? {}) as Record<string, unknown>;
    if (!isNumber(until) || typeof cls !== 'string' || !isNumber(seq)) return undefined;
    reservations.push([x[0], { until, cls, seq }]);
  }
  return { k, e: { f: failures, l, r: reservations } };
}
