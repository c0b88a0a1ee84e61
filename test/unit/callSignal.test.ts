import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { getEventListeners } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { callSignal } from '../../src/upstream/http.js';

test("a call's own timeout aborts its signal with a TimeoutError", async () => {
  const call = callSignal(20, []);
  assert.equal(call.signal.aborted, false);
  await sleep(60);
  assert.equal(call.signal.aborted, true);
  assert.equal((call.signal.reason as Error).name, 'TimeoutError');
  call.dispose();
});

test("a source's abort (the decision's deadline, the caller's signal) ends the call with that source's reason", () => {
  const decision = new AbortController();
  const caller = new AbortController();
  const call = callSignal(undefined, [caller.signal, undefined, decision.signal]);
  const reason = new DOMException('decision deadline reached', 'TimeoutError');
  decision.abort(reason);
  assert.equal(call.signal.aborted, true);
  assert.equal(call.signal.reason, reason);
  call.dispose();
  assert.equal(getEventListeners(caller.signal, 'abort').length, 0);
});

test('a source aborted before the call starts aborts it at once', () => {
  const caller = new AbortController();
  caller.abort(new Error('gone'));
  const call = callSignal(1000, [caller.signal]);
  assert.equal(call.signal.aborted, true);
  assert.equal((call.signal.reason as Error).message, 'gone');
  call.dispose();
});

test('a finished call leaves nothing behind: its timer never fires, the sources keep no listener, a later abort does not reach it', async () => {
  const decision = new AbortController();
  const call = callSignal(20, [decision.signal]);
  assert.equal(getEventListeners(decision.signal, 'abort').length, 1);
  call.dispose();
  assert.equal(getEventListeners(decision.signal, 'abort').length, 0);
  await sleep(60);
  decision.abort(new Error('late'));
  assert.equal(call.signal.aborted, false);
});

test("a call's timer alone does not keep the process alive (like AbortSignal.timeout's)", () => {
  const module = new URL('../../src/upstream/http.js', import.meta.url).href;
  const started = Date.now();
  const child = spawnSync(process.execPath, ['--input-type=module', '-e', `const { callSignal } = await import(${JSON.stringify(module)}); callSignal(30000, []);`], { timeout: 20_000 });
  assert.equal(child.status, 0, String(child.stderr));
  assert.ok(Date.now() - started < 15_000, `the process lived ${Date.now() - started} ms`);
});
