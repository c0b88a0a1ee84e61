/**
 * Child process of `npm run bench` (figure 3): one autocannon run, its summary printed as JSON.
 * A separate process so the load generator does not share credgate's event loop or core.
 *   node dist/bench/load.js '{"url":"http://127.0.0.1:PORT/auth","connections":50,"duration":5}'
 */
import autocannon from 'autocannon';

export interface LoadOptions {
  url: string;
  connections: number;
  /** Seconds. */
  duration: number;
  headers?: Record<string, string>;
}

export interface LoadResult {
  requests: number;
  requestsPerSecond: number;
  /** Milliseconds. */
  p50: number;
  p90: number;
  p99: number;
  max: number;
  non2xx: number;
  errors: number;
  timeouts: number;
}

const options = JSON.parse(process.argv[2] ?? '{}') as LoadOptions;
const result = await autocannon({
  url: options.url,
  connections: options.connections,
  duration: options.duration,
  headers: options.headers ?? {},
  pipelining: 1,
});
const summary: LoadResult = {
  requests: result.requests.total,
  requestsPerSecond: result.requests.total / (result.duration || options.duration),
  p50: result.latency.p50,
  p90: result.latency.p90,
  p99: result.latency.p99,
  max: result.latency.max,
  non2xx: result.non2xx,
  errors: result.errors,
  timeouts: result.timeouts,
};
process.stdout.write(JSON.stringify(summary) + '\n');
