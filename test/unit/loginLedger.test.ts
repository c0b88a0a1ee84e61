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
  // Regression: each of these had a budget of its own, and an AS that trims, drops invisible
  // characters or ignores accents (LDAP, PAD SPACE or accent-insensitive collations) counted them all for alice.
  for (const spelling of ['alice ', ' alice', 'alice  ', '\talice', 'a\u200blice', 'al\u00adice', 'alice\u2060', '\ufeffalice', '\u00e0lice', 'ALI\u0307CE', 'AL\u0130CE']) {
    assert.equal(ledgerName(spelling), ledgerName('alice'), JSON.stringify(spelling));
  }
  assert.equal(ledgerName('STRASSE'), ledgerName('stra\u00dfe'), 'full case folding');
  assert.equal(ledgerName('mary  ann'), ledgerName('mary ann'), 'runs of white space inside a name');
  assert.notEqual(ledgerName('maryann'), ledgerName('mary ann'), 'a space inside a name still separates');
  assert.notEqual(ledgerName('alice'), ledgerName('alicia'));
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
