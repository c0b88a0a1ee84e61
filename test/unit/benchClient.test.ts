import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { SequentialOutput } from '../../bench/sequential.js';

// The client of the bench's miss figures (7, 10): one process kept for the whole bench, each run
// handed to it before the measured bracket opens and started with `go`.
const script = fileURLToPath(new URL('../../bench/sequential.js', import.meta.url));

test('the bench client sends a loaded run only on go, at the concurrency asked, over connections it keeps', { timeout: 30_000 }, async () => {
  let received = 0;
  let underWay = 0;
  let mostUnderWay = 0;
  let connections = 0;
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    received++;
    mostUnderWay = Math.max(mostUnderWay, ++underWay);
    request.resume();
    request.on('end', () =>
      setTimeout(() => {
        underWay--;
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end('{"allow":true,"cached":false}');
      }, 5),
    );
  });
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/verify`;
  const child = spawn(process.execPath, [script], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async () => String((await lines.next()).value);
  try {
    child.stdin.write(JSON.stringify({ url, bodies: Array.from({ length: 5 }, (_, i) => ({ username: `u${i}` })), concurrency: 1 }) + '\n');
    assert.equal(await next(), '{"ready":true}');
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(received, 0, 'nothing is sent before go');

    child.stdin.write('go\n');
    const one = JSON.parse(await next()) as SequentialOutput;
    assert.equal(one.samples.length, 5);
    assert.ok(one.samples.every((s) => s.status === 200 && s.allow && !s.cached && s.ms > 0));
    assert.deepEqual(one.failures, []);
    assert.equal(mostUnderWay, 1, 'one at a time');
    assert.equal(connections, 1);

    child.stdin.write(JSON.stringify({ url, bodies: Array.from({ length: 5 }, () => ({})), concurrency: 1 }) + '\n');
    assert.equal(await next(), '{"ready":true}');
    child.stdin.write('go\n');
    assert.equal((JSON.parse(await next()) as SequentialOutput).samples.length, 5);
    assert.equal(connections, 1, 'the next run reuses the connection');

    mostUnderWay = 0;
    child.stdin.write(JSON.stringify({ url, bodies: Array.from({ length: 12 }, () => ({})), concurrency: 3 }) + '\n');
    assert.equal(await next(), '{"ready":true}');
    child.stdin.write('go\n');
    const three = JSON.parse(await next()) as SequentialOutput;
    assert.equal(three.samples.length, 12);
    assert.equal(mostUnderWay, 3, 'three under way');
    assert.equal(received, 22);

    child.stdin.end();
    const code = await new Promise((resolve) => (child.exitCode === null ? child.once('exit', resolve) : resolve(child.exitCode)));
    assert.equal(code, 0, 'ends when its input ends');
  } finally {
    child.kill();
    server.closeAllConnections();
    server.close();
  }
});
