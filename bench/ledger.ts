/**
 * Figure 10 of `npm run bench`: what login protection (the login ledger, `passwordFailureBudget`)
 * costs.
 *  - On a cached decision: nothing, and shown with numbers: cached `/auth` on the main credgate
 *    (budget 5, the default) against a twin with `passwordFailureBudget: 0`, interleaved in the same
 *    run; the CPU per request of each, their difference, and the ledger calls counted meanwhile
 *    (this module wraps `LocalLoginLedger.prototype.admit`/`settle` with a counter at load).
 *  - On a miss: admit + settle of one password grant, in a loop in this process (the local ledger)
 *    and against a real redis-server on the load CPU (the shared ledger: two scripts, two round
 *    trips); and password-grant misses with budget 5 against budget 0 (twins that cache nothing).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { configSchema } from '../src/config/schema.js';
import { createLogger } from '../src/log.js';
import { Metrics } from '../src/metrics/registry.js';
import { SharedRedis } from '../src/state/redis.js';
import { RedisLoginLedger } from '../src/state/redisLedger.js';
import { AccountDirectory } from '../src/verify/accounts.js';
import { CredentialCache } from '../src/verify/cache.js';
import { LocalLoginLedger, type LedgerRule } from '../src/verify/loginLedger.js';
import { aliceBody, misses, settle, startUncachedTwin, type MissRun } from './missPath.js';
import { bracket, quiet } from './generator.js';
import { pinnedCommand } from './pinning.js';
import { noteRun } from './validity.js';
import { fmt, results, row, targetRow } from './report.js';
import { purgeAlice, startCredgate, until200, type Bench } from './setup.js';
import { basicAuthorization, cachedProblems, CONNECTIONS, interleave, pairedDifference, record, sideRows } from './throughput.js';

export const CACHED_TARGET_MICROS = 5;

/** Calls to the local ledger since the bench started (every credgate in this process). */
export const ledgerCalls = { admit: 0, settle: 0 };
{
  const proto = LocalLoginLedger.prototype;
  const admit = proto.admit;
  const settle = proto.settle;
  proto.admit = function (this: LocalLoginLedger, ...args: Parameters<typeof admit>) {
    ledgerCalls.admit++;
    return admit.apply(this, args);
  };
  proto.settle = function (this: LocalLoginLedger, ...args: Parameters<typeof settle>) {
    ledgerCalls.settle++;
    return settle.apply(this, args);
  };
}

/** The configuration defaults: the rule and sizes src/service.ts builds the ledger with. */
const DEFAULTS = configSchema.parse({});
const RULE: LedgerRule = { budget: DEFAULTS.passwordFailureBudget, memoryMs: DEFAULTS.passwordFailureMemorySeconds * 1000, reservationMs: DEFAULTS.decisionTimeoutMs + DEFAULTS.upstreamTimeoutMs };
const SUBJECT = 'auth0|alice0001';
/** A local ledger as src/service.ts builds it: `ledgerMaxAccounts` (1M by default) for both maps. */
const localLedger = () => {
  const max = DEFAULTS.ledgerMaxAccounts;
  return new LocalLoginLedger(RULE, new AccountDirectory(max), max);
};

/**
 * admit + settle('success') of one grant for alice, `n` times, after `warm` unmeasured: CPU µs and
 * wall µs per grant. `others`: grants of that many other accounts left under way first, so that the
 * ledger is not empty when alice's success clears her entry.
 */
async function pairs(ledger: LocalLoginLedger | RedisLoginLedger, n: number, warm: number, others = 0): Promise<{ cpu: number; wall: number }> {
  await ledger.link(SUBJECT, ['alice', 'alice@example.com']);
  for (let i = 0; i < others; i++) await ledger.admit(`other-user-${i}`, false);
  const one = async () => {
    const a = await ledger.admit('alice', true);
    if (!a.admitted) throw new Error('ledger refused a grant for alice');
    await ledger.settle(a, 'success', SUBJECT);
  };
  for (let i = 0; i < warm; i++) await one();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await one();
  const wall = ((performance.now() - t0) * 1000) / n;
  const used = process.cpuUsage(cpu0);
  return { cpu: (used.user + used.system) / n, wall };
}

/** A loop in this process, bracketed and repeated like a load run while other processes took the server's CPU. */
function measured(label: string, loop: () => Promise<{ cpu: number; wall: number }>): Promise<{ cpu: number; wall: number; neighbourShare: number }> {
  return quiet(async () => {
    const { value, server } = await bracket(loop);
    noteRun({ label, tool: 'node client', neighbourShare: server.neighbourShare });
    return { ...value, neighbourShare: server.neighbourShare };
  });
}

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });

const accepts = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const done = (ok: boolean) => (socket.destroy(), resolve(ok));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });

/** A redis-server on a loopback port, on the load CPU, no persistence; undefined without the binary. */
async function startRedis(): Promise<{ url: string; stop(): Promise<void> } | undefined> {
  if (spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status !== 0) return undefined;
  const port = await freePort();
  const [cmd, ...args] = pinnedCommand('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'yes', '--databases', '1'], 'load');
  const child: ChildProcess = spawn(cmd, args, { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + 5000;
  while (!(await accepts(port))) {
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill('SIGKILL');
      throw new Error('redis-server did not start');
    }
    await sleep(20);
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    },
  };
}

export async function loginProtection(bench: Bench): Promise<void> {
  const authorization = basicAuthorization();
  // Cached decisions: budget 5 (the main credgate) against budget 0, interleaved.
  const unprotected = await startCredgate(bench.dev, bench.keys, { passwordFailureBudget: 0 });
  let callsDuring: { admit: number; settle: number };
  try {
    await purgeAlice(bench.credgate);
    for (const server of [bench.credgate, unprotected]) {
      const first = await until200(`${server.url}/auth`, { headers: { authorization } });
      if (first.status !== 200) throw new Error(`/auth answered ${first.status} for alice`);
    }
    const before = { ...ledgerCalls };
    const sides = await interleave(
      '10',
      [
        { name: 'cached /auth, budget 5', server: bench.credgate, options: () => ({ url: `${bench.credgate.url}/auth`, connections: CONNECTIONS, seconds: 2, headers: { authorization } }) },
        { name: 'cached /auth, budget 0', server: unprotected, options: () => ({ url: `${unprotected.url}/auth`, connections: CONNECTIONS, seconds: 2, headers: { authorization } }) },
      ],
      { halfSeconds: 2, rounds: 6 },
    );
    callsDuring = { admit: ledgerCalls.admit - before.admit, settle: ledgerCalls.settle - before.settle };
    record('loginProtectionCached', sides, { ledgerCalls: callsDuring });
    for (const s of sides.values()) sideRows('10', s);
    const on = sides.get('cached /auth, budget 5')!;
    const off = sides.get('cached /auth, budget 0')!;
    const perRun = (s: typeof on) => s.runs.map((r) => fmt(r.cpuPerRequest)).join(', ');
    row('10', 'CPU per request of each run, budget 5', perRun(on), 'µs');
    row('10', 'CPU per request of each run, budget 0', perRun(off), 'µs');
    row('10', 'ledger calls (admit / settle) during those runs', `${callsDuring.admit} / ${callsDuring.settle}`, 'calls', '0');
    const problem = cachedProblems(on, 'hits') ?? cachedProblems(off, 'hits');
    if (problem) row('10', 'measurement problem', problem, '');
    const diff = pairedDifference(on, off, CACHED_TARGET_MICROS);
    const verdict = problem ? 'invalid' : callsDuring.admit + callsDuring.settle !== 0 ? false : diff.verdict;
    targetRow('10', 'login protection per cached decision (budget 5 − 0, paired runs)', diff.text, 'µs CPU', `≤ ${CACHED_TARGET_MICROS} µs, 0 ledger calls`, verdict);
  } finally {
    await unprotected.close();
  }

  // A miss: the ledger's own work per password grant.
  const local = await measured('10 local ledger, empty', () => pairs(localLedger(), 1000, 100));
  const localBusy = await measured('10 local ledger, 100 others', () => pairs(localLedger(), 20_000, 2000, 100));
  row('10', 'local ledger: admit + settle per grant, ledger otherwise empty', local.cpu, 'µs CPU');
  row('10', 'local ledger: admit + settle per grant, 100 other accounts in it', localBusy.cpu, 'µs CPU');
  const ledgerResults: Record<string, unknown> = { local, localWithOthers: localBusy, ledgerMaxAccounts: DEFAULTS.ledgerMaxAccounts };
  const redis = await startRedis();
  if (redis) {
    const shared = new SharedRedis({ url: redis.url, keyPrefix: 'bench:', timeoutMs: 1000, log: createLogger({ level: 'silent' }), metrics: new Metrics('bench').sharedState(), onPurge: () => undefined, onSubscribed: () => undefined });
    try {
      RedisLoginLedger.define(shared.commandConnection);
      await shared.start(3000);
      const names = new CredentialCache({ ttlSeconds: 1, negativeTtlSeconds: 1, maxEntries: 10, appPasswordMemorySeconds: 1, keySecret: randomBytes(32).toString('hex') });
      const r = await measured('10 Redis ledger', () => pairs(new RedisLoginLedger(shared, localLedger(), names, RULE), 2000, 200));
      ledgerResults.redis = r;
      row('10', 'Redis ledger: admit + settle per password grant', `${fmt(r.cpu)} · ${fmt(r.wall)}`, 'µs CPU in credgate · µs wall (2 round trips)');
    } finally {
      await shared.close();
      await redis.stop();
    }
  } else {
    row('10', 'Redis ledger: admit + settle per password grant', 'not measured: no redis-server installed', '');
  }

  // In place: password-grant misses with budget 5 and 0, alternated (5, 0, 0, 5), 200 each run.
  const twins = { 5: await startUncachedTwin(bench), 0: await startUncachedTwin(bench, { passwordFailureBudget: 0 }) };
  const runs: Record<5 | 0, MissRun[]> = { 5: [], 0: [] };
  try {
    const body = (n: number) => Array.from({ length: n }, aliceBody);
    for (const budget of [5, 0] as const) await settle(`10 budget ${budget}`, `${twins[budget].url}/v1/verify`, body);
    for (const budget of [5, 0, 0, 5] as const) runs[budget].push(await misses(bench, `10 budget ${budget}`, `${twins[budget].url}/v1/verify`, body, { warmup: false, count: 200 }));
  } finally {
    await Promise.all([twins[5].close(), twins[0].close()]);
  }
  const mean = (rs: MissRun[]) => rs.reduce((t, r) => t + r.cpuPerRequest, 0) / rs.length;
  const [with5, with0] = [mean(runs[5]), mean(runs[0])];
  const allOk = [...runs[5], ...runs[0]].every((r) => r.uncachedAllows === r.requests && r.requests === 200 && r.failures.length === 0);
  ledgerResults.passwordMisses = { budget5: runs[5], budget0: runs[0] };
  results.loginProtection = ledgerResults;
  row('10', 'password miss, budget 5 · budget 0 (in place)', `${fmt(with5)} · ${fmt(with0)}${allOk ? '' : ' (some answers not uncached allows)'}`, 'µs CPU per miss');
  row('10', 'difference: the ledger in place, per password-grant miss', with5 - with0, 'µs CPU');
}
