import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, test } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { LedgerFile } from '../../src/state/ledgerFile.js';
import { AccountDirectory } from '../../src/verify/accounts.js';
import { LocalLoginLedger } from '../../src/verify/loginLedger.js';

const RULE = { budget: 5, memoryMs: 30 * 86_400_000, reservationMs: 10_000 };
const dir = mkdtempSync(join(tmpdir(), 'credgate-ledger-file-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const log = createLogger({ level: 'silent' });

function ledgerAt(path: string, clock: { now: number }): LocalLoginLedger {
  return new LocalLoginLedger(RULE, new AccountDirectory(100), 1000, () => clock.now, new LedgerFile(path, log));
}

test('a restarted ledger keeps failures and grants that were under way (they count once they fall due)', async () => {
  const path = join(dir, 'restart.jsonl');
  const clock = { now: 1_000_000 };
  const first = ledgerAt(path, clock);
  for (let i = 0; i < 2; i++) {
    const a = first.admitNow('alice', false);
    assert.ok(a.admitted);
    await first.settle(a, 'failure');
  }
  assert.ok(first.admitNow('alice', false).admitted, 'a grant under way when the process dies');
  const second = ledgerAt(path, clock);
  assert.equal(second.unsettled('alice'), 3);
  assert.equal(second.admitNow('alice', false).admitted, false, 'budget − 2 is spent across the restart');
  clock.now += RULE.reservationMs;
  assert.equal(ledgerAt(path, clock).unsettled('alice'), 3, 'the unsettled grant became a failure');
  assert.equal(statSync(path).mode & 0o777, 0o600);
  assert.ok(!readFileSync(path, 'utf8').includes('password'));
});

test('a success, an admin reset and an unsent grant are written too; start-up compacts to one line per account', async () => {
  const path = join(dir, 'compact.jsonl');
  const clock = { now: 2_000_000 };
  const ledger = ledgerAt(path, clock);
  const bob = ledger.admitNow('bob', false);
  assert.ok(bob.admitted);
  await ledger.settle(bob, 'failure');
  const ok = ledger.admitNow('bob', true);
  assert.ok(ok.admitted);
  await ledger.settle(ok, 'success', 'auth0|bob');
  const carol = ledger.admitNow('carol', false);
  assert.ok(carol.admitted);
  await ledger.settle(carol, 'failure');
  await ledger.reset('carol');
  const dave = ledger.admitNow('dave', false);
  assert.ok(dave.admitted);
  await ledger.settle(dave, 'unsent');
  const erin = ledger.admitNow('erin', false);
  assert.ok(erin.admitted);
  await ledger.settle(erin, 'failure');
  assert.ok(readFileSync(path, 'utf8').trim().split('\n').length > 1);
  const again = ledgerAt(path, clock);
  for (const name of ['bob', 'carol', 'dave']) assert.equal(again.unsettled(name), 0, name);
  assert.equal(again.unsettled('erin'), 1);
  const lines = readFileSync(path, 'utf8').trim().split('\n');
  assert.equal(lines.length, 1, 'compacted at start-up');
  assert.equal(JSON.parse(lines[0]!).k, 'erin');
});

test('a line cut short by a crash (or any line that does not parse) is skipped; the others stand', async () => {
  const path = join(dir, 'torn.jsonl');
  const clock = { now: 3_000_000 };
  const ledger = ledgerAt(path, clock);
  const a = ledger.admitNow('frank', false);
  assert.ok(a.admitted);
  await ledger.settle(a, 'failure');
  appendFileSync(path, '{"k":"gina","e":{"f":[{"seq":9,"cls":"gina"}],"l":1,"r":[["x",{"until":');
  appendFileSync(path, '\n{"k":"hugo","e":{"f":"not a list","l":1,"r":[]}}\n[1,2]\nnull\n');
  const warnings: unknown[] = [];
  const listening = createLogger({ level: 'warn', destination: new Writable({ write: (chunk, _enc, done) => done(void warnings.push(JSON.parse(String(chunk)))) }) });
  const restarted = new LocalLoginLedger(RULE, new AccountDirectory(100), 1000, () => clock.now, new LedgerFile(path, listening));
  assert.equal(restarted.unsettled('frank'), 1);
  assert.equal(restarted.unsettled('gina'), 0);
  assert.equal(restarted.unsettled('hugo'), 0);
  assert.equal((warnings[0] as { skipped: number }).skipped, 4);
});

test('a ledger file under a path that is not a directory stops start-up with an error naming ledgerFile', () => {
  const file = join(dir, 'plain-file');
  writeFileSync(file, '');
  assert.throws(() => ledgerAt(join(file, 'ledger.jsonl'), { now: 0 }), (err: unknown) => err instanceof ConfigError && err.key === 'ledgerFile' && /ENOTDIR/.test(err.message));
});

test("an account's names stay linked across a restart: its aliases keep sharing one budget", async () => {
  const path = join(dir, 'links.jsonl');
  const clock = { now: 4_000_000 };
  const first = ledgerAt(path, clock);
  const ok = first.admitNow('ivy', false);
  assert.ok(ok.admitted);
  await first.settle(ok, 'success', 'auth0|ivy');
  await first.link('auth0|ivy', ['ivy', 'Ivy@Example.com']);
  await first.link('auth0|ivy', ['ivy', 'ivy@example.com']); // nothing new: nothing written
  const linkLines = () => readFileSync(path, 'utf8').trim().split('\n').filter((l) => JSON.parse(l).s !== undefined);
  assert.equal(linkLines().length, 1);
  for (let i = 0; i < 2; i++) {
    const a = first.admitNow('ivy', false);
    assert.ok(a.admitted);
    await first.settle(a, 'failure');
  }
  const second = ledgerAt(path, clock);
  assert.equal(second.unsettled('IVY@example.com'), 2, "the e-mail name counts the username's failures after the restart");
  const third = second.admitNow('ivy@example.com', false);
  assert.ok(third.admitted);
  await second.settle(third, 'failure');
  assert.equal(second.admitNow('ivy@example.com', false).admitted, false, 'budget − 2 for the account, not per name');
  assert.equal(ledgerAt(path, clock).unsettled('ivy'), 3);
  assert.deepEqual(JSON.parse(linkLines()[0]!), { s: 'auth0|ivy', n: ['ivy', 'ivy@example.com'] }, 'compacted: one line per subject');
});

test('a restarted ledger never hands out the id of a grant that was under way at the crash (regression: pid.counter ids repeated in a container)', async () => {
  const path = join(dir, 'ids.jsonl');
  const clock = { now: 4_000_000 };
  const first = ledgerAt(path, clock);
  const crashed = first.admitNow('alice', false);
  assert.ok(crashed.admitted, 'a grant under way when the process dies');
  // The next process starts its counter (and, as PID 1 in a container, its pid) where this one's
  // was: write the journal as if the grant under way had the id the restarted ledger hands out next.
  const [prefix, counter] = [crashed.id.slice(0, crashed.id.lastIndexOf('.')), Number(crashed.id.slice(crashed.id.lastIndexOf('.') + 1))];
  const repeated = `${prefix}.${counter + 1}`;
  writeFileSync(path, readFileSync(path, 'utf8').replaceAll(JSON.stringify(crashed.id), JSON.stringify(repeated)));
  const second = ledgerAt(path, clock);
  assert.equal(second.unsettled('alice'), 1);
  const next = second.admitNow('alice', false);
  assert.ok(next.admitted);
  assert.notEqual(next.id, repeated);
  await second.settle(next, 'failure');
  assert.equal(second.unsettled('alice'), 2, 'the grant under way at the crash still counts beside the new failure');
  clock.now += RULE.reservationMs;
  assert.equal(ledgerAt(path, clock).unsettled('alice'), 2, 'and falls due as a failure after the restart');
});
