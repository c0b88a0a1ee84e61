import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AccountDirectory } from '../../src/verify/accounts.js';
import { grantLimit, LocalLoginLedger } from '../../src/verify/loginLedger.js';
import { ledgerName, namesAccount } from '../../src/verify/strategy.js';
import { ipGroup } from '../../src/verify/throttle.js';
import { runLedgerTable } from '../fixtures/ledgerTable.js';

test('the local ledger follows the one rule table (the Redis scripts run the same table in sharedState.redis)', async () => {
  await runLedgerTable(async (_row, rule) => {
    let clock = 1_000_000;
    const ledger = new LocalLoginLedger(rule, new AccountDirectory(100), 1000, () => clock);
    return { ledger, advance: (ms) => void (clock += ms) };
  });
});

test('the budget leaves one slot for known-good passwords, and the AS never sees `budget` failures', () => {
  assert.equal(grantLimit({ budget: 5 }, false), 3);
  assert.equal(grantLimit({ budget: 5 }, true), 4);
});

test('ledger names fold every spelling an AS could take for one account; binding a token to a typed name does not', () => {
  assert.equal(ledgerName('ALICE'), ledgerName('alice'));
  assert.equal(ledgerName('\uff41lice'), ledgerName('alice'), 'full-width');
  assert.equal(ledgerName('jos\u00e9'), ledgerName('jose\u0301'), 'NFC and NFD');
  assert.ok(namesAccount('ALICE@Example.com', 'alice@example.com'), 'ASCII case');
  assert.ok(!namesAccount('jos\u00e9', 'jose\u0301'), 'Unicode forms are two names');
  assert.ok(!namesAccount('\u00c9lise', '\u00e9lise'), 'non-ASCII case is two names');
  assert.ok(!namesAccount('\uff41lice', 'alice'), 'width is two names');
});

test('IPv6 addresses are grouped by their /64 (configurable); IPv4 and IPv4-mapped stand alone', () => {
  assert.equal(ipGroup('2001:db8:1:2:aaaa::1', 64), ipGroup('2001:db8:1:2:bbbb:cccc:dddd:eeee', 64));
  assert.notEqual(ipGroup('2001:db8:1:2::1', 64), ipGroup('2001:db8:1:3::1', 64));
  assert.equal(ipGroup('2001:db8:1:2::1', 64), '2001:db8:1:2:0:0:0:0/64');
  assert.equal(ipGroup('2001:db8:1:2::1', 48), ipGroup('2001:db8:1:ffff::1', 48));
  assert.equal(ipGroup('::ffff:192.0.2.7', 64), '192.0.2.7');
  assert.equal(ipGroup('192.0.2.7', 64), '192.0.2.7');
  assert.equal(ipGroup('::1', 128), '0:0:0:0:0:0:0:1/128');
});
