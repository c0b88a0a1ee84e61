import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { after, test } from 'node:test';
import { CLI } from '../fixtures/cli.js';
import { basicHeader } from '../fixtures/credgate.js';
import { answers, startFakeAuthorizationServer, type FakeAuthorizationServer } from '../fixtures/fakeAuthorizationServer.js';

const AUDIENCE = 'https://git.example.com';
const SHUTDOWN_DELAY_MS = 1200;
const DECISION_TIMEOUT_MS = 2500;
const SLOW_AS_MS = 1500;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const asp = (n: number) => `app-password-${String(n).padStart(4, '0')}-abcdefghijklmnopqrstuvwxyz`;

interface Record_ {
  readonly started: number;
  readonly status?: number;
  readonly error?: string;
}

let child: ChildProcess | undefined;
let fake: FakeAuthorizationServer | undefined;
const sockets: Socket[] = [];
after(async () => {
  if (child && child.exitCode === null) child.kill('SIGKILL');
  for (const s of sockets) s.destroy();
  await fake?.close();
});

test('SIGTERM under load: /readyz fails at once, every request already under way gets its answer, exit 0 within the bound', async () => {
  fake = await startFakeAuthorizationServer();
  fake.introspection = answers.json(200, { active: true, token_type: 'application_specific_password_token', sub: 'auth0|alice', aud: AUDIENCE, username: 'alice', scope: 'read:repo' });
  child = spawn(process.execPath, [CLI, 'serve'], {
    env: {
      PATH: process.env.PATH!,
      CREDGATE_ISSUER: fake.issuer,
      CREDGATE_AUDIENCE: AUDIENCE,
      CREDGATE_CLIENT_ID: 'cid',
      CREDGATE_CLIENT_SECRET: 'client-secret-value',
      CREDGATE_INTROSPECTION_CLIENT_SECRET: 'introspection-secret-value',
      CREDGATE_SHUTDOWN_DELAY_MS: String(SHUTDOWN_DELAY_MS),
      CREDGATE_DECISION_TIMEOUT_MS: String(DECISION_TIMEOUT_MS),
      CREDGATE_THROTTLE_USERNAME_FAILURES: '0',
      HOST: '127.0.0.1',
      PORT: '0',
      CREDGATE_LOG_LEVEL: 'info',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // One log line per decision: keep the tail only.
  let out = '';
  const keep = (c: Buffer) => (out = (out + c.toString('utf8')).slice(-50_000));
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<{ code: number | null; at: number }>((resolve) => child!.on('exit', (code) => resolve({ code, at: performance.now() })));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`credgate did not start: ${out}`)), 10_000);
    const look = () => {
      const m = /"url":"(http:\/\/[^"]+)"/.exec(out);
      if (m) {
        clearTimeout(timer);
        child!.stdout!.off('data', look);
        resolve(m[1]!);
      }
    };
    child!.stdout!.on('data', look);
    look();
  });

  const cachedAuth = { authorization: basicHeader('alice', asp(0)) };
  assert.equal((await fetch(`${url}/auth`, { headers: cachedAuth })).status, 200); // now cached

  // The load: 8 clients asking /auth back to back over keep-alive connections.
  const records: Record_[] = [];
  let stop = false;
  const worker = async () => {
    while (!stop) {
      const started = performance.now();
      try {
        const response = await fetch(`${url}/auth`, { headers: cachedAuth });
        await response.arrayBuffer();
        records.push({ started, status: response.status });
      } catch (err) {
        records.push({ started, error: String((err as { cause?: { code?: string } }).cause?.code ?? err) });
        await sleep(20);
      }
    }
  };
  const workers = Array.from({ length: 8 }, worker);
  await sleep(500);

  // Decisions that are still waiting for the AS when SIGTERM arrives.
  fake.introspection = { ...fake.introspection, delayMs: SLOW_AS_MS };
  const slow = Array.from({ length: 4 }, async (_, i) => {
    const response = await fetch(`${url}/auth`, { headers: { authorization: basicHeader('alice', asp(i + 1)) } });
    return { status: response.status, connection: response.headers.get('connection') };
  });
  // A client trickling a body in: it must not hold the exit up past the bound.
  const host = new URL(url);
  const trickle = connect(Number(host.port), host.hostname);
  sockets.push(trickle);
  trickle.on('error', () => {});
  trickle.write(`POST /v1/verify HTTP/1.1\r\nHost: ${host.host}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"username":`);
  await sleep(200);

  const sigtermAt = performance.now();
  child.kill('SIGTERM');
  // The signal reaches a busy process a moment later; from then on /readyz fails. Polled for at
  // most a quarter of the shutdown delay, so "at once" still means well before the listener closes.
  let ready = await fetch(`${url}/readyz`);
  while (ready.status !== 503 && performance.now() - sigtermAt < SHUTDOWN_DELAY_MS / 4) {
    await ready.arrayBuffer();
    await sleep(10);
    ready = await fetch(`${url}/readyz`);
  }
  const readiness = (await ready.json()) as { checks: { lifecycle: { ok: boolean; detail?: string } } };
  // Answered (so within the delay, before the listener closed) and already failing.
  assert.equal(ready.status, 503, `not ready within ${SHUTDOWN_DELAY_MS / 4} ms of SIGTERM`);
  assert.equal(readiness.checks.lifecycle.detail, 'shutting down');
  // Still serving during the delay, but asking clients to reconnect (elsewhere).
  const during = await fetch(`${url}/auth`, { headers: cachedAuth });
  assert.equal(during.status, 200);
  assert.equal(during.headers.get('connection'), 'close');

  const { code, at } = await exited;
  stop = true;
  await Promise.all(workers);
  const slowAnswers = await Promise.all(slow);

  assert.equal(code, 0, out.slice(-2000));
  const exitMs = at - sigtermAt;
  assert.ok(exitMs >= SHUTDOWN_DELAY_MS, `exited after ${Math.round(exitMs)} ms, before the delay`);
  assert.ok(exitMs < SHUTDOWN_DELAY_MS + DECISION_TIMEOUT_MS + 3000, `exited after ${Math.round(exitMs)} ms`);

  for (const answer of slowAnswers) assert.equal(answer.status, 200, 'in-flight decisions finished with their real answer');
  const before = records.filter((r) => r.started < sigtermAt);
  assert.ok(before.length > 20, `the load was real: ${before.length} requests before SIGTERM`);
  const dropped = before.filter((r) => r.status !== 200);
  assert.deepEqual(dropped, [], 'no request started before SIGTERM was dropped or refused');
  const afterwards = records.filter((r) => r.started >= sigtermAt);
  assert.ok(afterwards.some((r) => r.status === 200), 'served during the shutdown delay');
  for (const r of afterwards) assert.ok(r.status === 200 || r.status === 503 || r.error !== undefined, JSON.stringify(r));
  assert.ok(!/"level":50/.test(out), out.slice(-2000));
  assert.match(out, /"msg":"stopped"/);
});
