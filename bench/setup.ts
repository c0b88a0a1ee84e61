/**
 * What every figure of `npm run bench` shares: the dev AS (a child process), credgate as
 * production runs it, a bare fastify app in the same process, scratch files, and small HTTP helpers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Fastify, { type FastifyInstance } from 'fastify';
import { importJWK, jwtVerify, type JWK } from 'jose';
import { Agent, request as undiciRequest } from 'undici';
import { configSchema } from '../src/config/schema.js';
import { defaultDevUsers } from '../src/devserver/index.js';
import { createLogger, logDestination } from '../src/log.js';
import { startServer, type RunningServer } from '../src/main.js';
import { requireServiceConfig } from '../src/service.js';
import type { ClientKeys } from '../src/upstream/clientKeys.js';
import type { AsProcess } from './as.js';
import { joseOptions } from './joseOptions.js';
import { pinnedCommand } from './pinning.js';

export const AUDIENCE = 'https://git.example.com';
export const CLIENT = { clientId: 'credgate-bench', clientSecret: 'bench-client-secret-value' };
export const ALICE = defaultDevUsers().find((u) => u.username === 'alice')!;

export interface Bench {
  /** The dev AS, in its own process on the load CPU. */
  readonly dev: AsProcess;
  readonly credgate: RunningServer;
  readonly keys: ClientKeys;
  /** `GET` and `POST` `/bare` on a plain `Fastify()` in this process (and `POST /bare/relay`, `GET /bare/jose`: see startBareApp). */
  readonly bareUrl: string;
  /** A private scratch directory, removed at the end. */
  readonly scratch: string;
}

/** Reads the log lines of every credgate in the bench, as journald or a container runtime reads a service's stdout. */
let logReader: ChildProcess | undefined;

/**
 * The log's destination: a pipe read by `cat` (to /dev/null) on the load CPU, the production case
 * (stdout is a pipe to journald, Docker or the kubelet), so that each figure pays what writing the
 * log costs there: a write to a pipe whose reader is woken on another CPU.
 */
function logPipe(): NodeJS.WritableStream {
  if (logReader === undefined) {
    const [command, ...args] = pinnedCommand('cat', [], 'load');
    logReader = spawn(command, args, { stdio: ['pipe', 'ignore', 'inherit'] });
    logReader.unref();
  }
  return logReader.stdin!;
}

/**
 * credgate as production runs it: `info` level with every decision line written (to a pipe, read on
 * the load CPU) through the production logger, metrics on, login protection and the failed-login throttle at
 * their defaults (`passwordFailureBudget` 5). `overrides` are further configuration keys (the
 * twins: `passwordFailureBudget: 0`, `cacheTtlSeconds: 0`).
 */
export async function startCredgate(dev: { issuer: string }, keys: ClientKeys, overrides: Record<string, unknown> = {}): Promise<RunningServer> {
  const config = requireServiceConfig(
    configSchema.parse({
      issuer: dev.issuer, audience: AUDIENCE, ...CLIENT, host: '127.0.0.1', port: 0, logLevel: 'info',
      ...overrides,
    }),
    { inMemoryKeys: true },
  );
  // The destination production uses (src/log.ts), writing to a pipe as it does to a piped stdout.
  return startServer(config, createLogger({ level: config.logLevel, destination: logDestination(logPipe()) as unknown as NodeJS.WritableStream }), { keys });
}

/** What `GET /bare/allow` answers: the header block and body of a cached allow, copied from credgate's own answer (copyAllowAnswer). */
const allowAnswer = { headers: {} as Record<string, string>, body: '' };

/**
 * Makes `GET /bare/allow` answer exactly what credgate answered in `response` (a cached allow on
 * `/auth`), minus the headers Node adds itself (Date, Connection, Keep-Alive).
 */
export async function copyAllowAnswer(response: Response): Promise<void> {
  allowAnswer.headers = Object.fromEntries([...response.headers].filter(([name]) => !['date', 'connection', 'keep-alive'].includes(name)));
  allowAnswer.body = await response.text();
}

/** What `GET /bare/jose` checks a Bearer token with (figure 6 sets it once the AS's key is known). */
let bareJoseCheck: ((token: string) => Promise<unknown>) | undefined;

/**
 * Makes `GET /bare/jose` verify its Bearer token with jose's `jwtVerify` against `publicJwk`, with
 * the options figure 6's jose-alone child uses (RS256, `iss`, `aud`, 30 s tolerance, `exp` and `sub`
 * required): the bare route plus jose, served in situ at the rate such a route reaches.
 */
export async function useBareJose(publicJwk: JWK, issuer: string, audience: string): Promise<void> {
  const key = await importJWK(publicJwk, 'RS256');
  const options = joseOptions(issuer, audience);
  bareJoseCheck = (token) => jwtVerify(token, key, options);
}

/**
 * The baseline: the bare fastify app, routes that do the least fastify can do for the same request. With `upstreamUrl` (the AS process's bare upstream), also `POST /bare/relay`:
 * the same JSON body parsed, then one POST to the upstream through undici's `request` on a
 * keep-alive agent (the client credgate calls the AS with), its JSON answer parsed, a small object
 * answered: what a request that waits on one upstream call costs, without a decision. `GET /bare/jose`:
 * the bare GET route plus jose's check of its Bearer token (useBareJose).
 */
export async function startBareApp(upstreamUrl?: string): Promise<FastifyInstance> {
  const bare = Fastify();
  if (upstreamUrl !== undefined) {
    const agent = new Agent({ keepAliveTimeout: 30_000, connections: 128 });
    bare.addHook('onClose', async () => agent.close());
    bare.post('/bare/relay', async (request) => {
      // `?waitMs=N` is passed on: the upstream answers after N ms.
      const waitMs = (request.query as { waitMs?: string }).waitMs;
      const answer = await undiciRequest(waitMs === undefined ? upstreamUrl : `${upstreamUrl}?waitMs=${encodeURIComponent(waitMs)}`, { method: 'POST', dispatcher: agent, headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'token=bare-relay' });
      const upstream = (await answer.body.json()) as { active?: unknown };
      return { allow: typeof (request.body as { username?: unknown }).username === 'string' && upstream.active === true, reason: 'ok' };
    });
  }
  bare.get('/bare', async () => ({ reason: 'ok' }));
  // The bare GET route that also checks the Bearer token with jose (useBareJose), as an app would
  // that verified its own tokens: 401 for a token jose refuses, 503 before figure 6 sets a key.
  bare.get('/bare/jose', async (request, reply) => {
    const header = request.headers.authorization ?? '';
    if (bareJoseCheck === undefined) return reply.code(503).send({ reason: 'no key' });
    try {
      await bareJoseCheck(header.slice('Bearer '.length));
      return { reason: 'ok' };
    } catch {
      return reply.code(401).send({ reason: 'invalid_token' });
    }
  });
  // The same answer as a cached allow, written the way credgate writes it (one writeHead with a
  // ready header object, one end): what Node's HTTP costs for that request and answer, without a decision.
  bare.get('/bare/allow', (_request, reply) => {
    reply.hijack();
    reply.raw.writeHead(200, allowAnswer.headers);
    reply.raw.end(allowAnswer.body);
  });
  // Parses the same JSON body as /v1/verify (fastify's own parser) and answers a small object.
  bare.post('/bare', async (request) => ({ allow: typeof (request.body as { username?: unknown }).username === 'string', reason: 'ok' }));
  await bare.listen({ host: '127.0.0.1', port: 0 });
  return bare;
}

export const scratchDirectory = (): string => mkdtempSync(join(tmpdir(), 'credgate-bench-'));

/**
 * Sends the request until it answers 200, for at most `ms`: after a figure that overloaded the
 * process, credgate's load shedding answers 503 until the mean event-loop delay has come down.
 */
/**
 * Drops alice's cached decisions at `server` (the admin purge), so that a figure's first request
 * makes her entry anew with a whole `cacheTtlSeconds` (default 300 s) ahead of it: an entry made by
 * an earlier figure could otherwise expire in the middle of a later one (the bench runs longer),
 * whose cached runs would then meet misses and a call to the AS.
 */
export async function purgeAlice(server: RunningServer): Promise<void> {
  await server.service.purge({ username: 'alice' });
}

export async function until200(url: string, init: RequestInit = {}, ms = 10_000): Promise<Response> {
  const deadline = Date.now() + ms;
  for (;;) {
    const response = await fetch(url, init);
    if (response.status === 200 || Date.now() > deadline) return response;
    await response.arrayBuffer();
    await sleep(200);
  }
}

/** credgate's /metrics as `name{labels}` → value. */
export async function scrape(server: RunningServer): Promise<Map<string, number>> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const values = new Map<string, number>();
  for (const m of text.matchAll(/^([a-z_]+(?:\{[^}]*\})?) (\S+)$/gm)) values.set(m[1]!, Number(m[2]));
  return values;
}

/** The sum of every series of `name` whose labels contain `labels` (e.g. `result="hit"`). */
export function sumOf(values: Map<string, number>, name: string, labels = ''): number {
  let sum = 0;
  for (const [series, value] of values) {
    if ((series === name || series.startsWith(`${name}{`)) && series.includes(labels)) sum += value;
  }
  return sum;
}
