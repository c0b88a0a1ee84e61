import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UpstreamError, type UpstreamFailure } from '../../src/errors.js';
import { deadlineIn } from '../../src/upstream/deadline.js';
import { countsAgainstCircuit, UpstreamGuard, type CircuitGauge, type Endpoint, type GuardOptions } from '../../src/upstream/guard.js';

const fail = (failure: UpstreamFailure, o: { status?: number; sent?: false } = {}) => new UpstreamError(`fake ${failure}`, 'token', failure, o);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function guard(o: Partial<GuardOptions> = {}) {
  const events = { circuit: [] as Array<[Endpoint, CircuitGauge]>, retries: [] as Endpoint[], rejected: [] as string[] };
  const g = new UpstreamGuard({
    retries: 2,
    breakerFailureThreshold: 3,
    breakerHalfOpenAfterMs: 200,
    maxConcurrent: 10,
    onCircuitChange: (endpoint, state) => events.circuit.push([endpoint, state]),
    onRetry: (endpoint) => events.retries.push(endpoint),
    onRejected: (endpoint, cause) => events.rejected.push(`${endpoint}:${cause}`),
    ...o,
  });
  return { g, events };
}

/** An operation that throws the given errors in turn, then returns 'ok'. */
function scripted(...errors: Error[]) {
  const op = { calls: 0, run: async () => {
    const err = errors[op.calls++];
    if (err) throw err;
    return 'ok';
  } };
  return op;
}

test('safe endpoints are retried after a network failure, a timeout or a 5xx; not after a 4xx answer or garbage in a 200', async () => {
  for (const [err, retried] of [
    [fail('unreachable'), true],
    [fail('timeout'), true],
    [fail('bad_response', { status: 503 }), true],
    [fail('bad_response', { status: 400 }), false],
    [fail('bad_response', { status: 200 }), false],
    [fail('misconfigured', { status: 401 }), false],
  ] as const) {
    const { g } = guard({ breakerFailureThreshold: 0 });
    const op = scripted(err);
    const outcome = await g.run('introspection', op.run).catch((e: unknown) => e);
    assert.equal(op.calls, retried ? 2 : 1, `${err.failure} ${err.status ?? ''}`);
    assert.equal(outcome === 'ok', retried);
  }
});

test('the password grant is retried only when the request never left', async () => {
  for (const [err, retried] of [
    [fail('unreachable', { sent: false }), true], // connection refused, DNS
    [fail('timeout', { sent: false }), true], // connect timeout
    [fail('unreachable'), false], // reset after sending
    [fail('timeout'), false], // no answer in time: the AS may have counted the login
    [fail('bad_response', { status: 502 }), false],
  ] as const) {
    const { g, events } = guard({ breakerFailureThreshold: 0 });
    const op = scripted(err, err, err);
    await g.run('token', op.run).catch(() => undefined);
    assert.equal(op.calls, retried ? 3 : 1, `${err.failure} sent=${err.sent}`);
    assert.equal(events.retries.length, retried ? 2 : 0);
  }
});

test('no retry starts that could not finish before the decision deadline', async () => {
  const { g } = guard({ breakerFailureThreshold: 0, retries: 5 });
  const op = scripted(fail('unreachable'), fail('unreachable'), fail('unreachable'), fail('unreachable'), fail('unreachable'));
  const started = Date.now();
  const deadline = deadlineIn(300);
  await g.run('jwks', op.run, deadline).catch(() => undefined);
  deadline.dispose();
  assert.equal(op.calls, 1, 'less than back-off + one attempt left');
  assert.ok(Date.now() - started < 100);

  const roomy = deadlineIn(5000);
  const again = scripted(fail('unreachable'), fail('unreachable'), fail('unreachable'));
  assert.equal(await g.run('jwks', again.run, roomy), 'ok', 'with time left, the retries go on and the fourth attempt succeeds');
  roomy.dispose();
  assert.equal(again.calls, 4);
});

test('the breaker opens after consecutive failures, refuses at once, lets one probe through after the delay, and closes on success', async () => {
  const { g, events } = guard({ retries: 0 });
  const down = { calls: 0, run: async () => { down.calls++; throw fail('unreachable'); } };
  for (let i = 0; i < 3; i++) await assert.rejects(g.run('token', down.run));
  assert.deepEqual(events.circuit, [['token', 2]]);
  assert.equal(g.circuits().token.state, 'open');
  assert.equal(g.circuits().introspection.state, 'closed', 'one breaker per endpoint');
  const err = await g.run('token', down.run).catch((e: unknown) => e);
  assert.ok(err instanceof UpstreamError && err.failure === 'circuit_open' && err.sent === false);
  assert.equal(down.calls, 3, 'not called while open');
  assert.deepEqual(events.rejected, ['token:circuit_open']);

  await sleep(220);
  await assert.rejects(g.run('token', down.run)); // the probe fails: open again
  assert.equal(down.calls, 4);
  assert.deepEqual(events.circuit.slice(1), [['token', 1], ['token', 2]]);

  await sleep(220);
  assert.equal(await g.run('token', async () => 'back'), 'back');
  assert.equal(g.circuits().token.state, 'closed');
  assert.deepEqual(events.circuit.slice(-2), [['token', 1], ['token', 0]]);
});

test('answers that blame a user or credgate never open the circuit', async () => {
  const { g } = guard({ retries: 0 });
  for (const err of [fail('bad_response', { status: 400 }), fail('misconfigured', { status: 401 }), new Error('a bug')]) {
    for (let i = 0; i < 5; i++) await assert.rejects(g.run('token', async () => { throw err; }));
  }
  assert.equal(g.circuits().token.state, 'closed');
  assert.equal(countsAgainstCircuit(fail('bad_response', { status: 429 })), true, 'rate limited: back off');
  assert.equal(countsAgainstCircuit(fail('bad_response', { status: 200 })), true, 'garbage in a 200');
});

test('beyond maxConcurrent calls under way, the next is refused at once (not queued)', async () => {
  const { g, events } = guard({ maxConcurrent: 2, retries: 2 });
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const slow = () => g.run('introspection', async () => { await gate; return 'done'; });
  const running = [slow(), slow()];
  assert.equal(g.inFlight, 2);
  const started = Date.now();
  const err = await g.run('introspection', async () => 'never').catch((e: unknown) => e);
  assert.ok(err instanceof UpstreamError && err.failure === 'overloaded');
  assert.ok(Date.now() - started < 50);
  assert.deepEqual(events.rejected, ['introspection:concurrency_limit']);
  assert.deepEqual(events.retries, [], 'a refusal is not retried');
  release();
  assert.deepEqual(await Promise.all(running), ['done', 'done']);
  assert.equal(g.inFlight, 0);
});
