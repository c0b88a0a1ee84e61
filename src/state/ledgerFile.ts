import { appendFileSync, closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { ConfigError } from '../errors.js';
import type { Logger } from '../log.js';
import type { LedgerEntry, LedgerFailure, LedgerJournal, LedgerReservation } from '../verify/loginLedger.js';

/** Compaction once the file holds this many lines more than there are entries (and at every start). */
const COMPACT_SLACK = 50_000;

interface Line {
  /** Ledger key (a login name folded by `ledgerName`). */
  k: string;
  /** The entry; null: gone. */
  e: { f: LedgerFailure[]; l: number; r: [string, LedgerReservation][] } | null;
}

/**
 * The login ledger of a replica without Redis, in a file (`ledgerFile`): one JSON line per change
 * of an account's entry, appended synchronously before the grant it reserves is sent (a crash of the
 * process loses nothing written; the page cache is flushed by the kernel, and fsync'd at compaction).
 * At start-up the last line of each key wins, the file is rewritten with only those (a temporary file
 * renamed over it), and lines that do not parse (the tail of a write cut by a crash) are skipped.
 * Created with mode 0600: it names login names, never a password.
 */
export class LedgerFile implements LedgerJournal {
  #lines = 0;
  #live = new Set<string>();

  constructor(
    private readonly path: string,
    private readonly log: Logger,
  ) {}

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

  write(key: string, entry: LedgerEntry | undefined): void {
    if (entry === undefined) {
      if (!this.#live.delete(key)) return;
    } else {
      this.#live.add(key);
    }
    appendFileSync(this.path, serialise(key, entry) + '\n', { mode: 0o600 });
    if (++this.#lines > this.#live.size + COMPACT_SLACK) this.#compact(this.#read().entries);
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
      else if (line.e === null) entries.delete(line.k);
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
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, this.path);
    this.#live = new Set(entries.keys());
    this.#lines = entries.size;
  }
}

function serialise(key: string, entry: LedgerEntry | undefined): string {
  const line: Line = { k: key, e: entry === undefined ? null : { f: entry.failures, l: entry.lastFailureAt, r: [...entry.reservations] } };
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
  const { k, e } = value as Record<string, unknown>;
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
