/**
 * Child process of `npm run bench` (figure 7): POSTs each body to `url` one after the other
 * (concurrency 1, one keep-alive connection) and prints each request's latency as JSON. Nothing
 * else goes over the wire between two requests: the bench process reads the AS's time for each
 * request itself, in-process (missPath.ts), so that no scrape disturbs the next request.
 *   node dist/bench/sequential.js INPUT.json
 */
import { readFileSync } from 'node:fs';
import { Agent, request } from 'undici';

export interface SequentialInput {
  url: string;
  bodies: Record<string, unknown>[];
  /** The first `warmup` bodies are sent the same way but not reported. */
  warmup: number;
}

export interface SequentialSample {
  /** Client-observed latency: request sent → whole answer read, ms. */
  ms: number;
  status: number;
  allow: boolean;
  cached: boolean;
}

export interface SequentialOutput {
  samples: SequentialSample[];
  failures: string[];
}

const input = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as SequentialInput;
const agent = new Agent({ connections: 1, pipelining: 1, keepAliveTimeout: 30_000 });
const samples: SequentialSample[] = [];
const failures: string[] = [];
for (let i = 0; i < input.bodies.length; i++) {
  const body = JSON.stringify(input.bodies[i]);
  try {
    const t0 = performance.now();
    const response = await request(input.url, { method: 'POST', dispatcher: agent, headers: { 'content-type': 'application/json' }, body });
    const decision = (await response.body.json()) as { allow?: boolean; cached?: boolean };
    const ms = performance.now() - t0;
    if (i >= input.warmup) samples.push({ ms, status: response.statusCode, allow: decision.allow === true, cached: decision.cached === true });
  } catch (err) {
    if (failures.length < 5) failures.push(err instanceof Error ? err.message : String(err));
  }
}
await agent.close();
const output: SequentialOutput = { samples, failures };
process.stdout.write(JSON.stringify(output) + '\n');
