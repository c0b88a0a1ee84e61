/**
 * Child process of `npm run bench` (figures 7 and 10): the client of the miss figures, started once
 * and kept (missPath.ts's `MissClient`), so that no measurement pays for starting it. Spawning a
 * client costs the spawning process 4–12 ms of CPU here (fork and exec from a process of 0.1–1 GB),
 * and a new client's first request a new connection: charged to 100 requests of a pass, that was
 * 40–120 µs on every request of the figure. Commands, one JSON line each on stdin:
 *   {"url": …, "bodies": […], "concurrency": 1}   load a run; answers {"ready": true}
 *   go                                              send it; answers the run's SequentialOutput
 * Concurrency 1 POSTs each body after the previous answer over one keep-alive connection; N keeps
 * N requests under way over N connections. Nothing else goes over the wire between two requests:
 * the bench process reads the AS's time itself, in-process, so that no scrape disturbs the next
 * request. Exits when stdin ends.
 *   node dist/bench/sequential.js
 */
import { createInterface } from 'node:readline';
import { Agent, request } from 'undici';

export interface SequentialInput {
  url: string;
  bodies: Record<string, unknown>[];
  /** Requests under way at once (1: one at a time). */
  concurrency: number;
}

export interface SequentialSample {
  /** Client-observed latency: request sent → whole answer read, ms. */
  ms: number;
  status: number;
  allow: boolean;
  cached: boolean;
}

export interface SequentialOutput {
  /** In completion order. */
  samples: SequentialSample[];
  failures: string[];
  wallMs: number;
}

/** One pool per concurrency, kept between runs: its connections stay open (keep-alive). */
const agents = new Map<number, Agent>();
const agentFor = (concurrency: number) => {
  let agent = agents.get(concurrency);
  if (agent === undefined) agents.set(concurrency, (agent = new Agent({ connections: concurrency, pipelining: 1, keepAliveTimeout: 60_000 })));
  return agent;
};

async function run(input: SequentialInput): Promise<SequentialOutput> {
  const agent = agentFor(input.concurrency);
  const samples: SequentialSample[] = [];
  const failures: string[] = [];
  let next = 0;
  const loop = async () => {
    while (next < input.bodies.length) {
      const body = JSON.stringify(input.bodies[next++]);
      try {
        const t0 = performance.now();
        const response = await request(input.url, { method: 'POST', dispatcher: agent, headers: { 'content-type': 'application/json' }, body });
        const decision = (await response.body.json()) as { allow?: boolean; cached?: boolean };
        samples.push({ ms: performance.now() - t0, status: response.statusCode, allow: decision.allow === true, cached: decision.cached === true });
      } catch (err) {
        if (failures.length < 5) failures.push(err instanceof Error ? err.message : String(err));
      }
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: Math.max(1, Math.min(input.concurrency, input.bodies.length)) }, loop));
  return { samples, failures, wallMs: performance.now() - started };
}

let loaded: SequentialInput | undefined;
for await (const line of createInterface({ input: process.stdin })) {
  if (line === 'go') {
    if (loaded === undefined) throw new Error('go before a run was loaded');
    const input = loaded;
    loaded = undefined;
    process.stdout.write(JSON.stringify(await run(input)) + '\n');
  } else if (line.trim() !== '') {
    loaded = JSON.parse(line) as SequentialInput;
    process.stdout.write('{"ready":true}\n');
  }
}
await Promise.all([...agents.values()].map((a) => a.close()));
