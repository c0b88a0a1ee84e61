/**
 * Child process of `npm run bench` (figures 1 and 2): POSTs each body to /v1/verify, at most
 * `concurrency` at a time, and prints per-request latencies as JSON. A child (on the load
 * generators' CPU when pinned) so the client has its own event loop and core instead of sharing
 * credgate's.
 *   node dist/bench/fire.js INPUT.json
 */
import { readFileSync } from 'node:fs';
import { Agent, request } from 'undici';

export interface FireInput {
  url: string;
  bodies: Record<string, unknown>[];
  concurrency: number;
}

export interface FireOutput {
  wallMs: number;
  /** Milliseconds, one per request, in completion order. */
  latencies: number[];
  statuses: Record<string, number>;
  allowed: number;
  cached: number;
  failures: string[];
}

const input = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as FireInput;
const agent = new Agent({ connections: input.concurrency, pipelining: 1, keepAliveTimeout: 10_000 });
const latencies: number[] = [];
const statuses: Record<string, number> = {};
const failures: string[] = [];
let allowed = 0;
let cached = 0;
let next = 0;

async function loop(): Promise<void> {
  while (next < input.bodies.length) {
    const body = input.bodies[next++]!;
    const t0 = performance.now();
    try {
      const response = await request(input.url, {
        method: 'POST',
        dispatcher: agent,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      const decision = (await response.body.json()) as { allow?: boolean; cached?: boolean };
      latencies.push(performance.now() - t0);
      statuses[response.statusCode] = (statuses[response.statusCode] ?? 0) + 1;
      if (decision.allow === true) allowed++;
      if (decision.cached === true) cached++;
    } catch (err) {
      if (failures.length < 5) failures.push(err instanceof Error ? err.message : String(err));
    }
  }
}

const started = performance.now();
await Promise.all(Array.from({ length: Math.min(input.concurrency, input.bodies.length) }, loop));
const output: FireOutput = { wallMs: performance.now() - started, latencies, statuses, allowed, cached, failures };
await agent.close();
process.stdout.write(JSON.stringify(output) + '\n');
