import { Agent, request, type Dispatcher } from 'undici';
import { UpstreamError } from '../errors.js';
import type { Deadline } from './deadline.js';
import { UpstreamGuard, type Endpoint, type GuardOptions } from './guard.js';
import { duplicateMemberName } from './strictJson.js';

export type { Endpoint } from './guard.js';
/** How a call ended; a fixed set, safe as a metric label. */
export type CallOutcome = 'ok' | 'client_error' | 'server_error' | 'timeout' | 'unreachable' | 'too_large';

export interface CallObserver {
  (endpoint: Endpoint, outcome: CallOutcome, seconds: number): void;
}

export type FetchLike = (url: string, init: { method?: string; headers?: Record<string, string> | Headers; body?: unknown; signal?: AbortSignal | null; redirect?: string }) => Promise<Response>;

/** Least time left before the decision's deadline for a call to be worth sending. */
const MIN_CALL_MS = 20;

/** Largest answer read from the authorization server. A JWKS or an introspection answer is a few KiB. */
export const MAX_RESPONSE_BYTES = 256 * 1024;

/** Connection errors that prove the request never left: no connection was ever made. */
const NEVER_SENT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'UND_ERR_CONNECT_TIMEOUT']);

export interface UpstreamHttpOptions {
  /** Deadline of one call: connect, headers and the whole body. */
  readonly timeoutMs: number;
  /** Deadline of the TCP (and TLS) connect alone. Default `timeoutMs`. */
  readonly connectTimeoutMs?: number;
  /** Retries, circuit breakers and the concurrency limit; default: none of them. */
  readonly guard?: GuardOptions;
  readonly observe?: CallObserver;
}

/**
 * One keep-alive connection pool for every call to the authorization server. Each call gets a
 * deadline covering connect, headers and the whole body (a slow-drip body times out too), cut
 * shorter by the deadline of the decision being made; never follows redirects; reads at most
 * MAX_RESPONSE_BYTES; refuses JSON whose objects repeat a member name. Failures become
 * UpstreamError. `run` puts an operation under the guard's retries, breaker and concurrency limit.
 */
export class UpstreamHttp {
  readonly #agent: Agent;
  readonly #timeoutMs: number;
  readonly #observe: CallObserver;
  readonly guard: UpstreamGuard;

  constructor(options: UpstreamHttpOptions) {
    this.#timeoutMs = options.timeoutMs;
    this.#observe = options.observe ?? (() => {});
    this.guard = new UpstreamGuard(options.guard ?? { retries: 0, breakerFailureThreshold: 0, breakerHalfOpenAfterMs: 1000, maxConcurrent: 1024 });
    this.#agent = new Agent({
      keepAliveTimeout: 30_000,
      connections: 128,
      connect: { timeout: Math.min(options.connectTimeoutMs ?? options.timeoutMs, options.timeoutMs) },
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
    });
  }

  /** A fetch bound to one endpoint label and (if any) the deadline of the decision it serves, in
   * the shape oauth4webapi's and jose's `customFetch` take. */
  fetcher(endpoint: Endpoint, deadline?: Deadline): FetchLike {
    return (url, init) => this.#call(endpoint, url, init, deadline);
  }

  /** Runs one operation against `endpoint` (sending and parsing) under retries, breaker and concurrency limit. */
  run<T>(endpoint: Endpoint, operation: () => Promise<T>, deadline?: Deadline): Promise<T> {
    return this.guard.run(endpoint, operation, deadline);
  }

  async #call(endpoint: Endpoint, url: string, init: Parameters<FetchLike>[1], decision: Deadline | undefined): Promise<Response> {
    const started = performance.now();
    const left = decision === undefined ? Infinity : decision.at - Date.now();
    // A call that waited for a slot until just before its deadline would reach the AS only to be
    // abandoned at once: it is not sent.
    if (left < MIN_CALL_MS) throw new UpstreamError(`${endpoint}: no time left before the decision's deadline`, endpoint, 'timeout', { sent: false });
    const budget = Math.min(this.#timeoutMs, left);
    // A timer of its own only when the per-call timeout ends first: when the decision's deadline is
    // the limit, its own signal ends the call, so the call can never end a millisecond before the
    // deadline and be taken for an unavailable AS instead of a deadline reached.
    const call = callSignal(this.#timeoutMs < left ? this.#timeoutMs : undefined, [init.signal ?? undefined, decision?.signal]);
    const signal = call.signal;
    const done = (outcome: CallOutcome) => this.#observe(endpoint, outcome, (performance.now() - started) / 1000);
    let status: number;
    let headers: Dispatcher.ResponseData['headers'];
    let body: Uint8Array;
    try {
      // undici's request() rather than its fetch(): the same pool and timeouts at a third of the
      // cost per call (no WHATWG request and stream objects), which the miss path pays on every call.
      const answer = await request(url, {
        method: (init.method ?? 'GET') as Dispatcher.HttpMethod,
        headers: plainHeaders(init.headers),
        body: init.body === undefined || init.body === null ? undefined : String(init.body as string | URLSearchParams),
        signal,
        dispatcher: this.#agent,
      });
      status = answer.statusCode;
      headers = answer.headers;
      body = await readCapped(answer.body, MAX_RESPONSE_BYTES);
      call.dispose();
    } catch (err) {
      call.dispose();
      if (err instanceof ResponseTooLarge) {
        done('too_large');
        throw new UpstreamError(`${endpoint} answer larger than ${MAX_RESPONSE_BYTES} bytes`, endpoint, 'bad_response');
      }
      const timedOut = signal.aborted || isTimeout(err);
      const code = describe(err);
      done(timedOut ? 'timeout' : 'unreachable');
      throw new UpstreamError(
        timedOut ? `${endpoint} did not answer within ${Math.round(budget)} ms` : `${endpoint} unreachable: ${code}`,
        endpoint,
        timedOut ? 'timeout' : 'unreachable',
        { cause: err, ...(NEVER_SENT.has(code) ? { sent: false as const } : {}) },
      );
    }
    done(status >= 500 ? 'server_error' : status >= 400 ? 'client_error' : 'ok');
    if (status < 200 || status > 599) throw new UpstreamError(`${endpoint} answered with HTTP status ${status}`, endpoint, 'bad_response', { status });
    // The body as the parsers will read it (a Response's text: a leading byte-order mark dropped),
    // so that the duplicate check sees exactly what they parse.
    const text = utf8Text.decode(body);
    const json = jsonContainer(text);
    const duplicate = json === undefined ? undefined : duplicateMemberName(text);
    if (duplicate !== undefined) {
      throw new UpstreamError(`${endpoint} answer repeats the JSON member "${duplicate.slice(0, 40)}"; refusing an ambiguous answer`, endpoint, 'bad_response', { status });
    }
    // Hand back a Response over the answer already read, so parsers never touch the socket.
    return new ReadAnswer(body, { status, headers }, { text, json }) as unknown as Response;
  }

  async close(): Promise<void> {
    await this.#agent.close();
  }
}

/**
 * One call's signal: aborted when its own timeout (`timeoutMs`, if any) passes, or when one of
 * `sources` aborts (with that source's reason); `dispose` once the call is over. The same as
 * `AbortSignal.any([AbortSignal.timeout(ms), ...sources])` at a tenth of the CPU (~20 µs → ~2 µs
 * per call here): the platform's timeout signal cannot be cancelled, so every call left a timer that
 * fired seconds later, built a DOMException with its stack and dispatched an abort to nobody, and
 * `AbortSignal.any` registers the result with each source (issue #17: every miss pays it per call).
 */
export function callSignal(timeoutMs: number | undefined, sources: readonly (AbortSignal | undefined)[]): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const present = sources.filter((s): s is AbortSignal => s !== undefined);
  const already = present.find((s) => s.aborted);
  if (already !== undefined) {
    controller.abort(already.reason);
    return { signal: controller.signal, dispose: () => {} };
  }
  const forward = (event: Event) => controller.abort((event.target as AbortSignal).reason);
  for (const source of present) source.addEventListener('abort', forward, { once: true });
  const timer = timeoutMs === undefined ? undefined : setTimeout(() => controller.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError')), timeoutMs);
  // Like AbortSignal.timeout's, the timer alone does not keep the process alive.
  timer?.unref();
  return {
    signal: controller.signal,
    dispose: () => {
      clearTimeout(timer);
      for (const source of present) source.removeEventListener('abort', forward);
    },
  };
}

const utf8Text = new TextDecoder();

/**
 * A fetch `Response` over an answer already read in full (at most MAX_RESPONSE_BYTES): `text()`,
 * `json()`, `arrayBuffer()` and `clone()` answer from those bytes, as a Response over them would
 * (UTF-8 with a leading BOM dropped; one read per body, then a TypeError), without the WHATWG
 * stream a Response body is built on: ~9 → ~3.5 µs per answer parsed in a loop, paid by every call
 * to the AS (issue #17). `body` is null: nothing is left to stream. (It extends the real Response, so
 * `instanceof Response` holds; the cast only because TypeScript types Response's methods as properties.)
 */
export class ReadAnswer extends (Response as unknown as new (body: null, init: ResponseInit) => object) {
  readonly #bytes: Uint8Array;
  /** The body decoded and parsed already (by the duplicate check), for its first read. */
  #read: { readonly text: string; readonly json: unknown } | undefined;
  #used = false;

  /** `headers`: undici's (lower-case names, repeated ones as arrays) or a fetch Headers. `read`: the body's text as `text()` gives it, and its JSON if it has been parsed. */
  constructor(bytes: Uint8Array, init: { status: number; headers: Headers | Dispatcher.ResponseData['headers'] }, read?: { text: string; json: unknown }) {
    super(null, { status: init.status });
    this.#bytes = bytes;
    this.#read = read;
    // Appended to the Response's own Headers: a Headers handed to the constructor would be copied.
    const own = (this as unknown as Response).headers;
    if (init.headers instanceof Headers) {
      for (const [name, value] of init.headers) own.append(name, value);
      return;
    }
    for (const name in init.headers) {
      const value = init.headers[name];
      if (value === undefined) continue;
      if (Array.isArray(value)) for (const v of value) own.append(name, v);
      else own.append(name, value);
    }
  }

  get bodyUsed(): boolean {
    return this.#used;
  }

  #take(): Uint8Array {
    if (this.#used) throw new TypeError('Body is unusable: Body has already been read');
    this.#used = true;
    return this.#bytes;
  }

  text(): Promise<string> {
    try {
      const bytes = this.#take();
      return Promise.resolve(this.#read?.text ?? utf8Text.decode(bytes));
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }

  async json(): Promise<unknown> {
    // Parsed once for the duplicate check; the one read a body allows gets that value.
    const parsed = this.#read?.json;
    if (parsed !== undefined) {
      this.#take();
      return parsed;
    }
    return JSON.parse(await this.text()) as unknown;
  }

  arrayBuffer(): Promise<ArrayBuffer> {
    try {
      const bytes = this.#take();
      return Promise.resolve(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer);
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }

  clone(): ReadAnswer {
    if (this.#used) throw new TypeError('Response.clone: Body has already been consumed.');
    const self = this as unknown as Response;
    return new ReadAnswer(this.#bytes, { status: self.status, headers: self.headers });
  }
}

class ResponseTooLarge extends Error {}

async function readCapped(stream: Dispatcher.ResponseData['body'], limit: number): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    size += chunk.byteLength;
    if (size > limit) {
      stream.destroy();
      throw new ResponseTooLarge();
    }
    chunks.push(chunk);
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}

/** The request headers oauth4webapi and jose hand over (a Headers or a plain object), as undici's request() takes them. */
function plainHeaders(headers: Record<string, string> | Headers | undefined): Record<string, string> | undefined {
  if (headers === undefined) return undefined;
  return headers instanceof Headers ? Object.fromEntries(headers) : headers;
}

/** `text` parsed, if it is a JSON object or array that JSON.parse accepts; else undefined (the protocol parser refuses it). */
function jsonContainer(text: string): object | undefined {
  let i = 0;
  while (i < text.length && (text[i] === ' ' || text[i] === '\n' || text[i] === '\r' || text[i] === '\t')) i++;
  if (text[i] !== '{' && text[i] !== '[') return undefined;
  try {
    return JSON.parse(text) as object;
  } catch {
    return undefined;
  }
}

function isTimeout(err: unknown): boolean {
  const e = err as { name?: string; code?: string; cause?: { name?: string; code?: string } };
  const names = [e?.name, e?.code, e?.cause?.name, e?.cause?.code];
  return names.some((n) => n === 'TimeoutError' || n === 'UND_ERR_CONNECT_TIMEOUT' || n === 'UND_ERR_HEADERS_TIMEOUT' || n === 'UND_ERR_BODY_TIMEOUT');
}

/** A short, secret-free description of a network failure (error codes only, never bodies). */
function describe(err: unknown): string {
  const e = err as { code?: string; cause?: { code?: string; message?: string } };
  return e?.cause?.code ?? e?.code ?? (err instanceof Error ? err.name : 'error');
}
