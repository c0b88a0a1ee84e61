/**
 * Child process of `npm run bench` (figures 3–6): one autocannon run, its summary printed as JSON.
 * A separate process (on its own CPU when pinned) so the load generator does not share credgate's
 * event loop or core.
 *   node dist/bench/load.js '{"url":"http://127.0.0.1:PORT/auth","connections":50,"duration":5}'
 * With `tokensFile`, every request carries `Authorization: Bearer <the next line of the file>`, each
 * line used once; if they run out first, the run stops and is reported up to that moment
 * (`tokensExhausted`).
 */
import { readFileSync } from 'node:fs';
import autocannon from 'autocannon';
import { ascending, percentile } from './report.js';

export interface LoadOptions {
  url: string;
  connections: number;
  /** Seconds. */
  duration: number;
  /** Default GET. */
  method?: 'GET' | 'POST';
  headers?: Record<string, string>;
  body?: string;
  /** A file of one token per line: each request takes the next one. */
  tokensFile?: string;
}

export interface LoadResult {
  requests: number;
  requestsPerSecond: number;
  /** Seconds the run lasted (autocannon's own clock). */
  seconds: number;
  /** Milliseconds, from every 2xx response's own time (autocannon's histogram keeps whole ms only). */
  p50: number;
  p90: number;
  p99: number;
  max: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  /** With `tokensFile`: how many were put into requests, and whether they ran out. */
  tokensUsed?: number;
  tokensExhausted?: boolean;
}

const options = JSON.parse(process.argv[2] ?? '{}') as LoadOptions;

const tokens = options.tokensFile === undefined ? undefined : readFileSync(options.tokensFile, 'utf8').trim().split('\n');
const latencies: number[] = [];
/** Responses that were not 2xx. */
let others = 0;
const started = performance.now();
let next = 0;
/** When the last token went into a request: responses until then carried unique tokens only. */
let exhausted: { ms: number; responses: number } | undefined;

type Request = { headers?: Record<string, string> } & Record<string, unknown>;
const withNextToken = (request: Request): Request => {
  if (next === tokens!.length) {
    // Out of tokens: stop. autocannon goes on until its next sample tick, and those requests can only
    // repeat a token (a cache hit), so the run is reported up to this moment only.
    if (!exhausted) {
      exhausted = { ms: performance.now() - started, responses: latencies.length + others };
      setImmediate(() => instance.stop());
    }
    return { ...request, headers: { ...request.headers, authorization: `Bearer ${tokens!.at(-1)!}` } };
  }
  return { ...request, headers: { ...request.headers, authorization: `Bearer ${tokens![next++]!}` } };
};

const instance = autocannon(
  {
    url: options.url,
    connections: options.connections,
    duration: options.duration,
    method: options.method ?? 'GET',
    headers: options.headers ?? {},
    ...(options.body === undefined ? {} : { body: options.body }),
    ...(tokens ? { requests: [{ setupRequest: withNextToken as never }] } : {}),
    pipelining: 1,
    // autocannon notices the end of `duration` only at its next sample tick: 100 ms, not 1 s, so a
    // 2.5 s run lasts 2.5 s and not 3 s.
    sampleInt: 100,
  },
  (err, result) => {
    if (err) throw err;
    const sorted = ascending(exhausted ? latencies.slice(0, exhausted.responses) : latencies);
    const seconds = exhausted ? exhausted.ms / 1000 : result.duration || options.duration;
    const requests = exhausted ? exhausted.responses : result.requests.total;
    const summary: LoadResult = {
      requests,
      requestsPerSecond: requests / seconds,
      seconds,
      p50: percentile(sorted, 50),
      p90: percentile(sorted, 90),
      p99: percentile(sorted, 99),
      max: sorted.at(-1) ?? NaN,
      non2xx: result.non2xx,
      errors: result.errors,
      timeouts: result.timeouts,
      ...(tokens ? { tokensUsed: next, tokensExhausted: exhausted !== undefined } : {}),
    };
    process.stdout.write(JSON.stringify(summary) + '\n');
  },
);
instance.on('response', (_client: unknown, statusCode: number, _bytes: number, responseTime: number) => {
  if (statusCode >= 200 && statusCode < 300) latencies.push(responseTime);
  else others++;
});
