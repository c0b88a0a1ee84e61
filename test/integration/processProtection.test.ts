import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { basicHeader, startCredgate, type TestCredgate } from '../fixtures/credgate.js';
import { answers, credgateConfigFor, type FakeAuthorizationServer, startFakeAuthorizationServer } from '../fixtures/fakeAuthorizationServer.js';
import { metricValue } from '../fixtures/metrics.js';

const AUDIENCE = 'https://git.example.com';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const base = (issuer: string) => ({
  ...credgateConfigFor(issuer, AUDIENCE),
  trustedProxies: ['loopback'],
  mailImapBackend: '127.0.0.1:1143',
});
const mailHeaders = { 'auth-method': 'plain', 'auth-user': 'alice', 'auth-pass': 'pw-123456', 'auth-protocol': 'imap', 'auth-login-attempt': '1', 'client-ip': '192.0.2.7' };

/** Opens a connection, sends `head`, then nothing more; resolves with how long until the server gave up, and what it said. */
function stall(url: string, head: string, dripMs?: number): Promise<{ ms: number; text: string }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = connect(Number(port), hostname);
    let text = '';
    let drip: NodeJS.Timeout | undefined;
    socket.setEncoding('latin1');
    socket.on('data', (c: string) => (text += c));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearInterval(drip);
      resolve({ ms: Date.now() - started, text });
    });
    socket.setTimeout(8000, () => reject(new Error('the server never cut off the slow client')));
    socket.write(head, () => {
      if (dripMs) drip = setInterval(() => socket.write('a'), dripMs);
    });
  });
}

describe('overload: requests are refused at once with 503 in each interface\'s terms, and the process recovers', () => {
  let fake: FakeAuthorizationServer;
  before(async () => {
    fake = await startFakeAuthorizationServer();
  });
  after(async () => {
    await fake.close();
  });

  test('heap over maxHeapUsedBytes: decisions 503 without asking the AS; liveness and metrics still answered; not ready', async () => {
    const credgate = await startCredgate({ ...base(fake.issuer), maxHeapUsedBytes: 1 });
    try {
      await sleep(1200); // under-pressure samples once a second
      const calls = { ...fake.calls };
      const auth = await credgate.auth(basicHeader('alice', 'pw-123456'));
      assert.equal(auth.status, 503);
      assert.equal(auth.headers.get('retry-after'), '5');
      assert.equal(auth.headers.get('x-auth-subject'), null);
      assert.equal(((await auth.json()) as { reason: string }).reason, 'upstream_unavailable');

      const verify = await credgate.verify({ username: 'alice', password: 'pw-123456' });
      assert.equal(verify.status, 503);
      assert.deepEqual(verify.body, { allow: false, status: 503, reason: 'upstream_unavailable', cached: false });

      const mail = await fetch(`${credgate.url}/auth/mail`, { headers: mailHeaders });
      assert.equal(mail.headers.get('auth-status'), '[UNAVAILABLE] Temporary server problem, try again later');
      assert.ok(mail.headers.get('auth-wait'), 'nginx is told to let the client retry');
      assert.equal(mail.headers.get('auth-server'), null);

      assert.deepEqual(fake.calls, calls, 'the AS was not asked');
      assert.equal((await fetch(`${credgate.url}/healthz`)).status, 200);
      const ready = await fetch(`${credgate.url}/readyz`);
      assert.equal(ready.status, 503);
      assert.match(((await ready.json()) as { checks: { load: { detail: string } } }).checks.load.detail, /overloaded: .*heap/);
      assert.equal((await fetch(`${credgate.url}/metrics`)).status, 200);
      assert.ok((await metricValue(credgate, 'credgate_load_shed_total', { cause: 'heap' })) >= 3);
      assert.ok(!credgate.logs.some((l) => l.includes('"level":50')), 'no error logged, no 500');
    } finally {
      await credgate.close();
    }
  });

  test('a blocked event loop: the requests that waited are refused at once, then the service recovers on its own', async () => {
    const credgate = await startCredgate({ ...base(fake.issuer), maxEventLoopDelayMs: 100 });
    try {
      fake.introspection = answers.json(200, { active: false });
      assert.equal((await credgate.verify({ username: 'alice', password: 'pw-123456' })).status, 200);
      // 2.5 s of 250 ms stalls of this process (credgate runs in it). under-pressure measures the
      // mean delay over each second, so every one of its samples taken meanwhile sees ~250 ms.
      const stalledUntil = Date.now() + 2500;
      while (Date.now() < stalledUntil) {
        const until = Date.now() + 250;
        while (Date.now() < until);
        await sleep(0);
      }
      const shed = await credgate.verify({ username: 'alice', password: 'pw-123456' });
      assert.equal(shed.status, 503);
      assert.equal(shed.body.reason, 'upstream_unavailable');
      assert.ok((await metricValue(credgate, 'credgate_load_shed_total', { cause: 'event_loop_delay' })) >= 1);
      const started = Date.now();
      while ((await credgate.verify({ username: 'alice', password: 'pw-123456' })).status !== 200) {
        assert.ok(Date.now() - started < 5000, 'did not recover');
        await sleep(100);
      }
      assert.equal((await fetch(`${credgate.url}/readyz`)).status, 200);
    } finally {
      await credgate.close();
    }
  });
});

describe('slow clients are cut off; everyone else is still served', () => {
  let fake: FakeAuthorizationServer;
  let credgate: TestCredgate;
  before(async () => {
    fake = await startFakeAuthorizationServer();
    credgate = await startCredgate({ ...base(fake.issuer), clientTimeoutMs: 800 });
  });
  after(async () => {
    await credgate.close();
    await fake.close();
  });

  test('headers that never finish (slowloris) are cut off after clientTimeoutMs', async () => {
    const host = new URL(credgate.url).host;
    const [slow, served] = await Promise.all([
      stall(credgate.url, `GET /auth HTTP/1.1\r\nHost: ${host}\r\nX-Slow: `, 100),
      (async () => {
        await sleep(200);
        return (await fetch(`${credgate.url}/healthz`)).status;
      })(),
    ]);
    assert.equal(served, 200, 'others are served meanwhile');
    assert.ok(slow.ms >= 700 && slow.ms < 2500, `cut off after ${slow.ms} ms`);
    assert.match(slow.text, /^$|^HTTP\/1\.1 408/);
  });

  test('a body that trickles in is cut off after clientTimeoutMs', async () => {
    const host = new URL(credgate.url).host;
    const slow = await stall(credgate.url, `POST /v1/verify HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"username":"`, 100);
    assert.ok(slow.ms >= 700 && slow.ms < 2500, `cut off after ${slow.ms} ms`);
    assert.doesNotMatch(slow.text, /HTTP\/1\.1 (200|5\d\d)/);
  });

  test('an idle connection that sends nothing is closed too', async () => {
    const slow = await stall(credgate.url, '');
    assert.ok(slow.ms < 4000, `closed after ${slow.ms} ms`);
  });
});
