import { openSync, writeSync } from 'node:fs';
import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

/**
 * Keys whose values never reach a log line, at any depth, compared case-insensitively: credentials
 * can reach a log only under a name not listed here, and the tests scan log output for the
 * secrets they used. This is configuration of the logger, applied to every line, not care at each
 * call site.
 */
export const REDACTED_KEYS: ReadonlySet<string> = new Set(
  [
    'password', 'token', 'secret', 'clientSecret', 'client_secret', 'introspectionClientSecret', 'client_assertion',
    'access_token', 'refresh_token', 'id_token', 'assertion', 'authorization', 'proxy-authorization', 'auth-pass', 'authPass',
    'cookie', 'set-cookie', 'adminToken', 'cacheKeySecret', 'mailBackendPassword',
    'redisUrl', // may carry the Redis password
    'redisPassword', 'redisSentinelPassword',
  ].map((k) => k.toLowerCase()),
);

const CENSOR = '[redacted]';
const MAX_DEPTH = 6;

/** Whether a key is one of REDACTED_KEYS, remembered per spelling (log keys are mostly a fixed set). */
const verdicts = new Map<string, boolean>();
function isRedactedKey(key: string): boolean {
  let verdict = verdicts.get(key);
  if (verdict === undefined) {
    verdict = REDACTED_KEYS.has(key.toLowerCase());
    if (verdicts.size < 4096) verdicts.set(key, verdict);
  }
  return verdict;
}

function needsRedaction(value: unknown, depth: number, seen: Set<object>): boolean {
  if (value === null || typeof value !== 'object' || depth > MAX_DEPTH || seen.has(value)) return false;
  seen.add(value);
  if (Array.isArray(value)) return value.some((v) => needsRedaction(v, depth + 1, seen));
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue;
    if (isRedactedKey(key)) return true;
    if (needsRedaction((value as Record<string, unknown>)[key], depth + 1, seen)) return true;
  }
  return false;
}

/** `needsRedaction` for a log line's top object, without allocating when every value is a primitive (the decision line). */
function lineNeedsRedaction(obj: object): boolean {
  let nested = false;
  for (const key in obj) {
    if (!Object.hasOwn(obj, key)) continue;
    if (isRedactedKey(key)) return true;
    const value = (obj as Record<string, unknown>)[key];
    if (value !== null && typeof value === 'object') nested = true;
  }
  return nested && needsRedaction(obj, 0, new Set());
}

function redactedCopy(value: unknown, depth: number, seen: WeakMap<object, unknown>): unknown {
  if (value === null || typeof value !== 'object' || depth > MAX_DEPTH) return value;
  if (seen.has(value)) return seen.get(value);
  if (value instanceof Error) {
    // Keep what pino's error serializer reads; redact any enumerable extras.
    const copy: Record<string, unknown> = { type: value.name, message: value.message, stack: value.stack };
    seen.set(value, copy);
    for (const key of Object.keys(value)) copy[key] = isRedactedKey(key) ? CENSOR : redactedCopy((value as unknown as Record<string, unknown>)[key], depth + 1, seen);
    return copy;
  }
  if (Array.isArray(value)) {
    const copy: unknown[] = [];
    seen.set(value, copy);
    for (const v of value) copy.push(redactedCopy(v, depth + 1, seen));
    return copy;
  }
  const copy: Record<string, unknown> = {};
  seen.set(value, copy);
  for (const key of Object.keys(value)) copy[key] = isRedactedKey(key) ? CENSOR : redactedCopy((value as Record<string, unknown>)[key], depth + 1, seen);
  return copy;
}

/**
 * The object of one log line with every value under a REDACTED_KEYS name (at any depth) replaced
 * by `[redacted]`. The caller's object is never changed; a line with nothing to redact (every
 * decision line) is returned as it is, after one walk over its keys. pino's own path redaction
 * was measured at ~40 µs a line with wildcard paths (npm run bench), more than the rest of a
 * cached decision; this walk costs well under a microsecond for a decision line.
 */
export function redact<T extends object>(obj: T): T {
  return lineNeedsRedaction(obj) ? (redactedCopy(obj, 0, new WeakMap()) as T) : obj;
}

/** pino's `isoTime`, formatted once per millisecond rather than once per line. */
let lastMs = -1;
let lastTime = '';
export function isoTime(): string {
  const now = Date.now();
  if (now !== lastMs) {
    lastMs = now;
    lastTime = `,"time":"${new Date(now).toISOString()}"`;
  }
  return lastTime;
}

/** How long a log line may wait for others to be written with it. */
export const LOG_WRITE_DELAY_MS = 10;
/** At most this many bytes of lines wait: a fuller batch is written at once. */
const BATCH_BYTES = 64 * 1024;
/** Destinations with lines not yet written: written synchronously when the process exits. */
const unwritten = new Set<LineDestination>();
let exitHookInstalled = false;

/**
 * Where log lines go: a line waits at most LOG_WRITE_DELAY_MS (10 ms) for the others written
 * meanwhile, and they are handed to the output together in one write, in the order written: a busy
 * server makes about a hundred writes a second, not one per decision, and the log's reader (journald,
 * the container runtime) is woken as often. Lines still waiting when the process exits
 * (`process.exit`, an uncaught error) are written synchronously then; a process killed outright
 * (SIGKILL, out of memory) loses at most the last 10 ms of lines.
 *
 * The output is stdout as Node itself opens it (`process.stdout`): a pipe or socket (journald,
 * Docker, Kubernetes) is written without blocking — what the kernel cannot take at once Node queues
 * and writes when the reader catches up, on the main thread, without a worker thread's round trip;
 * a file or /dev/null is written synchronously, as Node does for files. Replaces pino's own
 * asynchronous destination (sonic-boom), which sends every write through libuv's thread pool and
 * re-measures its whole growing buffer on every line: the decision pipeline called in a loop costs
 * 8.3 µs per cached decision with this destination against 11.6 µs with sonic-boom (issue #17).
 * Lines are encoded into the batch as they come: kept as strings until written, they lived through
 * garbage collections and cost 3 µs more.
 */
export class LineDestination {
  /** Lines not written yet, encoded as they come (a line kept as a string would live through garbage collections until written). */
  readonly #buffer = Buffer.allocUnsafe(BATCH_BYTES);
  #used = 0;
  readonly #output: (bytes: Buffer) => void;

  /** `output` gets the waiting lines' bytes and keeps the buffer; it must take everything (queue what it cannot write at once). */
  constructor(output: (bytes: Buffer) => void) {
    this.#output = output;
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      process.once('exit', () => {
        for (const destination of unwritten) destination.flushSync();
      });
    }
  }

  write(line: string): boolean {
    // A UTF-8 character takes at most 3 bytes per UTF-16 code unit: when the line might not fit, the
    // lines before it go first, and a line longer than a batch goes out alone.
    if (this.#used + 3 * line.length > BATCH_BYTES) {
      this.#flush();
      if (3 * line.length > BATCH_BYTES) {
        this.#output(Buffer.from(line));
        return true;
      }
    }
    if (this.#used === 0) {
      unwritten.add(this);
      // Unreferenced: a process with nothing else to do exits at once, and the exit hook writes the lines.
      setTimeout(this.#flush, LOG_WRITE_DELAY_MS).unref();
    }
    this.#used += this.#buffer.write(line, this.#used);
    return true;
  }

  readonly #flush = (): void => {
    if (this.#used === 0) return;
    // A copy of what is used (the output may keep it queued): the batch buffer itself is reused.
    const bytes = Buffer.from(this.#buffer.subarray(0, this.#used));
    this.#used = 0;
    unwritten.delete(this);
    this.#output(bytes);
  };

  /** Writes what is waiting now (at exit; pino's `flushSync`). */
  flushSync(): void {
    this.#flush();
  }
}

let brokenPipeIgnored = false;
/**
 * When the reader of stdout goes away (EPIPE: journald restarted, `credgate … | head`), lines are
 * dropped instead of the process crashing on the stream's error, as pino's own destination does;
 * any other error on stdout is thrown as before.
 */
function ignoreBrokenPipe(): void {
  if (brokenPipeIgnored) return;
  brokenPipeIgnored = true;
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
  });
}

/**
 * Most bytes of log lines a stream's reader may leave waiting in the process: beyond, batches are
 * dropped (and counted) until it catches up. A reader that stalls without going away (journald
 * hung, a stopped `docker logs` consumer) would otherwise grow the heap until the process dies,
 * and every user's logins with it: logs are worth less than the decisions.
 */
export const LOG_QUEUE_LIMIT_BYTES = 16 * 1024 * 1024;
let droppedLines = 0;

/** Log lines dropped since start because the reader of the log fell LOG_QUEUE_LIMIT_BYTES behind (`credgate_log_lines_dropped_total`). */
export function droppedLogLines(): number {
  return droppedLines;
}

function linesIn(bytes: Buffer): number {
  let count = 0;
  for (let at = bytes.indexOf(10); at !== -1; at = bytes.indexOf(10, at + 1)) count++;
  return count;
}

/**
 * Writes batches to a stream that queues what its reader has not taken yet (stdout as a pipe): while
 * LOG_QUEUE_LIMIT_BYTES wait, a batch is dropped whole (no line is cut) and counted; the first batch
 * written after that starts with a warning line saying how many lines were lost.
 */
function boundedWriter(stream: NodeJS.WritableStream & { readonly writableLength: number }): (bytes: Buffer) => void {
  let unreported = 0;
  return (bytes) => {
    if (stream.writableLength >= LOG_QUEUE_LIMIT_BYTES) {
      const lines = linesIn(bytes);
      droppedLines += lines;
      unreported += lines;
      return;
    }
    if (unreported > 0) {
      stream.write(
        `{"level":40${isoTime()},${JSON.stringify(BASE).slice(1, -1)},"droppedLines":${unreported},"msg":"log lines dropped: the reader of the log fell ${LOG_QUEUE_LIMIT_BYTES / 1024 / 1024} MiB behind"}\n`,
      );
      unreported = 0;
    }
    stream.write(bytes);
  };
}

/** Writes all of `bytes` to a file descriptor that blocks (a file, /dev/null). */
function writeAll(fd: number, bytes: Buffer): void {
  while (bytes.length > 0) bytes = bytes.subarray(writeSync(fd, bytes));
}

/**
 * Where credgate's log lines go (see LineDestination): stdout by default; a path (opened for
 * appending) or a stream (the bench's pipe to a reader on another CPU) otherwise.
 */
export function logDestination(dest?: string | NodeJS.WritableStream): LineDestination {
  if (dest === undefined) {
    ignoreBrokenPipe();
    const write = boundedWriter(process.stdout);
    return new LineDestination((bytes) => {
      if (!process.stdout.destroyed) write(bytes);
    });
  }
  if (typeof dest !== 'string') return new LineDestination(boundedWriter(dest as NodeJS.WritableStream & { readonly writableLength: number }));
  const fd = openSync(dest, 'a');
  return new LineDestination((bytes) => writeAll(fd, bytes));
}

/** The bindings of every line (pino's `base`). */
const BASE = Object.freeze({ service: 'credgate' });
/** Loggers made by createLogger that write JSON lines to a stream: where decisionLog may write its line itself. */
const lineStreams = new WeakMap<Logger, DestinationStream>();

export function createLogger(options: { level: string; pretty?: boolean; destination?: NodeJS.WritableStream }): Logger {
  const base: LoggerOptions = {
    level: options.level,
    formatters: { log: (obj) => redact(obj) },
    base: BASE,
    timestamp: isoTime,
  };
  if (options.pretty) {
    return pino({ ...base, transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss', ignore: 'pid,hostname,service' } } });
  }
  const stream = (options.destination as DestinationStream | undefined) ?? logDestination();
  const logger = pino(base, stream);
  lineStreams.set(logger, stream);
  return logger;
}

/**
 * The fields of the one line every decision writes (decide/pipeline.ts), in the order they are
 * written; undefined ones are left out, as pino does. None is a REDACTED_KEYS name, and none holds a
 * password or token.
 */
export interface DecisionFields {
  readonly requestId: string | undefined;
  readonly interface: string;
  readonly protocol: string | undefined;
  readonly result: 'allow' | 'deny';
  readonly reason: string;
  readonly detail: string | undefined;
  readonly credential: string | undefined;
  readonly subject: string | undefined;
  readonly username: string | undefined;
  readonly login: string | undefined;
  readonly clientIp: string;
  readonly rule: string | undefined;
  readonly missingScopes: readonly string[] | undefined;
  readonly retryAfterSeconds: number | undefined;
  readonly durationMs: number;
  readonly cached: boolean;
}

const json = (value: string | number | boolean | readonly string[]): string => JSON.stringify(value);
const field = (name: string, value: string | number | boolean | readonly string[] | undefined): string => (value === undefined ? '' : `,"${name}":${json(value)}`);

/**
 * Writes the decision line: `logger.info(fields, 'decision')`, byte for byte (test/unit/log.test.ts
 * holds the two side by side). For a logger made by createLogger the line is put together here
 * and handed to its stream: pino's generic path (a walk over the object for redaction, a
 * stringifier looked up per key, message formatting) cost about as much as the rest of a cached
 * decision's own work (issue #17), and this line's keys are known and never secret. Any other
 * logger (a host application's, in the fastify plugin; pino-pretty in dev mode) gets `info`.
 */
export function decisionLog(logger: Logger): (fields: DecisionFields) => void {
  const stream = lineStreams.get(logger);
  if (stream === undefined) return (fields) => logger.info(fields, 'decision');
  const level = `{"level":${logger.levels.values.info!}`;
  const bindings = JSON.stringify(BASE).slice(1, -1);
  return (f) => {
    if (!logger.isLevelEnabled('info')) return;
    stream.write(
      level + isoTime() + ',' + bindings +
        field('requestId', f.requestId) + field('interface', f.interface) + field('protocol', f.protocol) + field('result', f.result) +
        field('reason', f.reason) + field('detail', f.detail) + field('credential', f.credential) + field('subject', f.subject) +
        field('username', f.username) + field('login', f.login) + field('clientIp', f.clientIp) + field('rule', f.rule) +
        field('missingScopes', f.missingScopes) + field('retryAfterSeconds', f.retryAfterSeconds) + field('durationMs', f.durationMs) +
        field('cached', f.cached) + ',"msg":"decision"}\n',
    );
  };
}
