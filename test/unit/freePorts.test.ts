import assert from 'node:assert/strict';
import { createServer, type AddressInfo } from 'node:net';
import { test } from 'node:test';
import { freePort, freePorts } from '../fixtures/processes.js';

// The integration tests' run-time ports. A CI run once failed because two ports picked one after the
// other were the same (the kernel reused the port just released) and nginx refused "duplicate
// "127.0.0.1:…" address and port pair", an error no "address in use" retry catches.

test('ports picked together are distinct, none of the taken ones, and each can be bound', async () => {
  for (let round = 0; round < 20; round++) {
    const taken = await freePorts(3);
    const ports = await freePorts(40, taken);
    assert.equal(ports.length, 40);
    assert.equal(new Set(ports).size, 40, `distinct: ${ports.join(' ')}`);
    for (const port of ports) assert.ok(!taken.includes(port), `${port} is one of the taken ${taken.join(' ')}`);
    for (const port of ports) assert.ok(port > 0 && port < 65536);
  }
  const port = await freePort();
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', resolve));
  assert.equal((server.address() as AddressInfo).port, port, 'released: bound again at once');
  await new Promise((resolve) => server.close(resolve));
});

test('a port listened on by someone else is never handed out, even when it is the only one asked to avoid', async () => {
  const busy = createServer();
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
  const busyPort = (busy.address() as AddressInfo).port;
  try {
    const ports = await freePorts(50);
    assert.ok(!ports.includes(busyPort));
    // The one just released is skipped when the caller names it: the pick goes on until it has another.
    const released = await freePort();
    for (let i = 0; i < 20; i++) assert.notEqual(await freePort([released]), released);
  } finally {
    await new Promise((resolve) => busy.close(resolve));
  }
});
