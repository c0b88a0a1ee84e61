import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { createLogger, decisionLog, isoTime, redact, type DecisionFields } from '../../src/log.js';

function capture() {
  const lines: string[] = [];
  const destination = new Writable({ write(chunk: Buffer, _e, done) { lines.push(chunk.toString()); done(); } });
  return { log: createLogger({ level: 'info', destination }), lines };
}

test('credentials under any listed name, at any depth and in any case, are redacted in the log line', () => {
  const { log, lines } = capture();
  log.info({
    password: 'pw-1', Token: 'tok-2', nested: { deeper: { client_secret: 'sec-3', list: [{ Authorization: 'Basic abc-4' }] } },
    headers: { 'auth-pass': 'mail-5', 'proxy-authorization': 'Basic pq-6' }, adminToken: 'admin-7', username: 'alice',
  }, 'something');
  const text = lines.join('');
  for (const secret of ['pw-1', 'tok-2', 'sec-3', 'abc-4', 'mail-5', 'pq-6', 'admin-7']) assert.ok(!text.includes(secret), secret);
  assert.match(text, /"username":"alice"/);
  assert.equal((text.match(/\[redacted\]/g) ?? []).length, 7);
});

test("the caller's object is left as it was", () => {
  const input = { user: { password: 'keep-me' } };
  const out = redact(input);
  assert.equal(input.user.password, 'keep-me');
  assert.deepEqual(out, { user: { password: '[redacted]' } });
});

test('a line with nothing to redact is passed through untouched (the decision line)', () => {
  const decision = { requestId: 'r', interface: 'auth', result: 'allow', reason: 'ok', username: 'alice', cached: true };
  assert.equal(redact(decision), decision);
});

test('errors keep their message and stack; their enumerable secrets are redacted', () => {
  const err = Object.assign(new Error('boom'), { token: 'err-secret' });
  const { log, lines } = capture();
  log.warn({ err }, 'failed');
  assert.ok(!lines.join('').includes('err-secret'));
  assert.match(lines.join(''), /"message":"boom"/);
});

test('cyclic objects do not hang or crash the logger', () => {
  const a: Record<string, unknown> = { password: 'cyc-1' };
  a.self = a;
  const { log, lines } = capture();
  log.info({ a }, 'cycle');
  assert.ok(!lines.join('').includes('cyc-1'));
});

test('the timestamp is pino-style ISO time of the line, formatted once per millisecond', async () => {
  const first = isoTime();
  assert.match(first, /^,"time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"$/);
  const stamp = Date.parse(JSON.parse(`{${first.slice(1)}}`).time as string);
  assert.ok(Math.abs(stamp - Date.now()) < 50);
  await new Promise((resolve) => setTimeout(resolve, 5));
  assert.notEqual(isoTime(), first, 'a later millisecond, a new stamp');
  const { log, lines } = capture();
  log.info({ a: 1 }, 'x');
  assert.match(lines[0]!, /"time":"\d{4}-[^"]+Z"/);
});

test('a flat line holding a secret under a listed name is still caught, whatever the spelling', () => {
  for (const key of ['password', 'PASSWORD', 'Password', 'clientSecret', 'CLIENTSECRET']) {
    assert.deepEqual(redact({ ok: 1, [key]: 'x' }), { ok: 1, [key]: '[redacted]' }, key);
  }
});

/** Lines with their timestamp blanked: the two writers may straddle a millisecond. */
const untimed = (lines: string[]) => lines.map((l) => l.replace(/"time":"[^"]+"/, '"time":"T"'));

test("the decision line is byte for byte pino's own line for the same fields, undefined fields left out", () => {
  const cases: DecisionFields[] = [
    {
      requestId: 'c0a8f8a4-3a1e-4e55-9f4b-2b0f5d3a9c11', interface: 'auth', protocol: undefined, result: 'allow', reason: 'ok', detail: undefined,
      credential: 'password', subject: 'auth0|alice', username: 'alice', login: 'alice', clientIp: '127.0.0.1', rule: undefined,
      missingScopes: undefined, retryAfterSeconds: undefined, durationMs: 0.1, cached: true,
    },
    {
      requestId: undefined, interface: 'mail', protocol: 'imap', result: 'deny', reason: 'insufficient_scope', detail: 'needs "write" \\ \u0001 é 😀',
      credential: undefined, subject: undefined, username: undefined, login: 'jos\u00e9 "q"', clientIp: '2001:db8::1', rule: 'git-push',
      missingScopes: ['write:repo', 'read:mail'], retryAfterSeconds: 30, durationMs: 12.5, cached: false,
    },
  ];
  const viaPino = capture();
  const viaWriter = capture();
  const write = decisionLog(viaWriter.log);
  for (const fields of cases) {
    viaPino.log.info({ ...fields }, 'decision');
    write(fields);
  }
  assert.equal(viaWriter.lines.length, 2);
  assert.deepEqual(untimed(viaWriter.lines), untimed(viaPino.lines));
  assert.equal(JSON.parse(viaWriter.lines[1]!).detail, cases[1]!.detail);
});

test('the decision line obeys the log level, and a logger credgate did not make gets it through pino', () => {
  const lines: string[] = [];
  const destination = new Writable({ write(chunk: Buffer, _e, done) { lines.push(chunk.toString()); done(); } });
  const quiet = createLogger({ level: 'warn', destination });
  const fields: DecisionFields = {
    requestId: 'r', interface: 'verify', protocol: undefined, result: 'allow', reason: 'ok', detail: undefined, credential: 'app_password',
    subject: 's', username: 'u', login: 'u', clientIp: '10.0.0.1', rule: undefined, missingScopes: undefined, retryAfterSeconds: undefined, durationMs: 1, cached: false,
  };
  decisionLog(quiet)(fields);
  assert.deepEqual(lines, []);
  quiet.level = 'info';
  decisionLog(quiet)(fields);
  assert.equal(lines.length, 1);
  const child = quiet.child({ component: 'host' });
  decisionLog(child)(fields);
  assert.equal(lines.length, 2);
  assert.equal(JSON.parse(lines[1]!).component, 'host', 'the child logger wrote it, with its bindings');
});
