import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { AUTH0_BLOCKS_AT, BUDGET, checkModel, DAY, nameIndex, PROFILES, replay, RULE, type Action, type Backend, type ModelOptions } from '../fixtures/loginProtectionModel.js';

/**
 * Login protection against a model of the AS (test/fixtures/loginProtectionModel.ts): one replica
 * with its in-process ledger, a simulated clock (seconds to weeks pass at once), random
 * interleavings of attacks (concurrent bursts, slow drips, every spelling of both of the victim's
 * names, a confusable account of the attacker's own, ASPs under the wrong name or for another
 * audience), outages of both AS endpoints, and the real user's logins. After every action: the AS
 * never blocked the victim nor saw `passwordFailureBudget` consecutive failures, and the real user's
 * ASPs and known-good password got in unless an endpoint they need was down.
 *
 * CREDGATE_MODEL_RUNS, CREDGATE_MODEL_SEED and CREDGATE_MODEL_OPTIONS (JSON, over OPTIONS) explore further.
 */

const RUNS = Number(process.env.CREDGATE_MODEL_RUNS ?? 100);
const SEED = process.env.CREDGATE_MODEL_SEED === undefined ? undefined : Number(process.env.CREDGATE_MODEL_SEED);
const local = (): Backend => ({ replicas: 1, ledger: (ledger) => ledger });

/**
 * The AS forgets a run of failures 30 days after its last one (docs/security.md: credgate forgets "no faster
 * than the AS"); answers come back in the order the AS counted; a right password left unanswered is
 * a known gap (below). The victim has logged in through credgate once, so her names are linked (the
 * local directory keeps them; unlinked names are the last tests here).
 */
const OPTIONS: ModelOptions = {
  asMemoryMs: RULE.memoryMs,
  knownGoodScope: 'replica',
  decisionTimeoutMs: 50,
  reorderAnswers: false,
  tolerateUnansweredRightPassword: true,
  unlinkedBound: 2 * (BUDGET - 2),
  tolerateKnownGoodWhileUnlinked: false,
};

test(`one replica: the AS never sees ${BUDGET} consecutive failures; the real user gets in (${RUNS} runs × ≤ 40 actions)`, async (t) => {
  const stats = await checkModel(local, { ...OPTIONS, ...JSON.parse(process.env.CREDGATE_MODEL_OPTIONS ?? '{}') }, { numRuns: RUNS, maxActions: 40, redis: false, seed: SEED, linkFirst: true });
  t.diagnostic(JSON.stringify(stats));
});

// ---- Counterexamples the property found, fixed (src/verify/loginLedger.ts, src/state/redisLedger.ts) ----

const P = PROFILES[0]!;
const V = nameIndex(P, 'victim');
const E = nameIndex(P, 'victim@example.com');
const burst = (...names: number[]): Action => ({ t: 'burst', r: 0, names });
const wait = (ms: number): Action => ({ t: 'wait', ms });
const password: Action = { t: 'user', r: 0, login: { kind: 'password', name: 0 } };

test('fixed: failures of one name are not forgotten while another name of the account keeps its run alive at the AS', async () => {
  // Was: 5 at the AS (the first name's two failures forgotten 30 days after their own time).
  await replay({}, OPTIONS, local(), [burst(V, V), wait(29 * DAY), burst(E), wait(DAY), burst(V, V, V)]);
});

test("fixed: the first success under one name clears the failures the account's other name had before it", async () => {
  // Was: her known-good password throttled (the e-mail's failures stayed, the success having been
  // settled before credgate learnt the e-mail belongs to her). Guesses under both names, answered
  // before her first login (by e-mail): the link after it clears both; her second login is known-good.
  const byEmail: Action = { t: 'user', r: 0, login: { kind: 'password', name: 1 } };
  await replay({ linkFirst: false }, OPTIONS, local(), [burst(V, V, V), burst(E), byEmail, byEmail]);
});

test('fixed: answers that come back in another order than the AS counted them', async () => {
  // Was: 5 at the AS. A success cleared failures answered while it was under way, which the AS had
  // counted after it. Now a success clears only failures answered before its own grant was sent.
  const asp: Action = { t: 'foreignAsp', r: 0, kind: 'attackers-own', name: V, shaped: true };
  await replay({}, { ...OPTIONS, reorderAnswers: true }, local(), [asp, { t: 'burst', r: 0, names: [V, V, V], user: { kind: 'password', name: 0 }, at: 1 }, burst(V, V, V)]);
});

test("fixed: a look-alike account of the attacker's own does not clear the victim's failures while her names are not linked", async () => {
  // Was: blocked. The twin's success cleared the ledger key it shares with the victim's name (same
  // NFKC fold), though the AS had counted those failures for her. Now a success clears only failures
  // typed as its own names (ASCII case aside).
  const twin: Action = { t: 'twin', r: 0 };
  await replay({ linkFirst: false, twin: true }, { ...OPTIONS, unlinkedBound: AUTH0_BLOCKS_AT - 1 }, local(), [twin, burst(V, V, V), twin, burst(V, V, V), twin, burst(V, V, V), twin, burst(V)]);
});

test('fixed, with passwordFailureMemorySeconds: 0: an AS that never forgets failures (only a success resets)', async () => {
  // With the default (30 days, as Auth0) credgate forgets first: 5 at such an AS. 0 keeps them until a success or an admin reset.
  await replay({}, { ...OPTIONS, asMemoryMs: Infinity, ledgerMemoryMs: Infinity }, local(), [burst(V, V, V), wait(RULE.memoryMs), burst(V, V)]);
});

test('fixed, with passwordFailureMemorySeconds: 0: names not linked yet, staggered so that each is forgotten while the other keeps the AS counting', async () => {
  await replay({ linkFirst: false }, { ...OPTIONS, unlinkedBound: 2 * (BUDGET - 2), ledgerMemoryMs: Infinity }, local(), [burst(V, V, V), wait(29 * DAY), burst(E, E, E), wait(DAY), burst(V, V, V), wait(29 * DAY), burst(E, E, E)]);
});

test('one replica, passwordFailureMemorySeconds: 0, an AS that never forgets: the property holds', async (t) => {
  const stats = await checkModel(local, { ...OPTIONS, asMemoryMs: Infinity, ledgerMemoryMs: Infinity }, { numRuns: Math.ceil(RUNS / 2), maxActions: 40, redis: false, seed: SEED, linkFirst: true });
  t.diagnostic(JSON.stringify(stats));
});

// ---- Known limits (docs/security.md, "Known limitations"): each a counterexample the property found.
// Each test pins down exactly what the user meets (the strict property fails with that message and no
// other) and that nothing worse happens (the property holds once that one outcome is tolerated): a
// change in either direction fails here and must be reflected in the docs.

test('known limit: her own known-good grant that went unanswered takes her slot (429 throttled, never an AS block)', async () => {
  // A right password sent and never answered counts as a failure; with budget − 2 guesses standing,
  // her known-good password is throttled (for up to the memory, or until an admin reset); her ASPs still work.
  const actions = [burst(V, V, V), { t: 'token', mode: 'timeout' } as Action, password, { t: 'token', mode: 'up' } as Action, password];
  await assert.rejects(replay({}, { ...OPTIONS, tolerateUnansweredRightPassword: false }, local(), actions), /the user's known-good password as "victim" on r0: 429 throttled/);
  await replay({}, OPTIONS, local(), actions);
});

test('known limit: with the default memory (30 days), names not linked yet, staggered so that each is forgotten while the other keeps the AS counting', async () => {
  // passwordFailureMemorySeconds: 0 closes it (the "fixed, with passwordFailureMemorySeconds: 0" test
  // above runs the same actions), at the cost of a new password staying throttled until a success or an admin reset.
  const actions = [burst(V, V, V), wait(29 * DAY), burst(E, E, E), wait(DAY), burst(V, V, V), wait(29 * DAY), burst(E, E, E)];
  await assert.rejects(replay({ linkFirst: false }, { ...OPTIONS, unlinkedBound: AUTH0_BLOCKS_AT - 1 }, local(), actions), /the AS blocked the victim at step 7 \(10 consecutive failures\)/);
  await replay({ linkFirst: false }, { ...OPTIONS, unlinkedBound: AUTH0_BLOCKS_AT - 1 }, local(), actions.slice(0, 5));
});

test('known limit: her first login while guesses under her other name are under way (her known-good password throttled, never an AS block)', async () => {
  // Guesses answered while her success was under way stay (the AS may have counted them after it);
  // with two names not linked yet they can take her known-good slot.
  const byEmail: Action = { t: 'user', r: 0, login: { kind: 'password', name: 1 } };
  const actions: Action[] = [{ t: 'burst', r: 0, names: [V, V, V, E], user: { kind: 'password', name: 1 }, at: 3 }, byEmail];
  // The model stops at the first violation: this is the last action, and every check before it held.
  await assert.rejects(replay({ linkFirst: false }, OPTIONS, local(), actions), /the user's known-good password as "victim@example\.com" on r0: 429 throttled/);
});

test('known limit: one replica without Redis or ledgerFile loses its ledger when it restarts (budget − 2 more guesses each time)', async () => {
  const restart: Action = { t: 'restart', r: 0 };
  await assert.rejects(replay({}, { ...OPTIONS, unlinkedBound: AUTH0_BLOCKS_AT - 1 }, local(), [burst(V, V, V), restart, burst(V, V, V), restart, burst(V, V, V), restart, burst(V)]), /the AS blocked the victim/);
  // One restart: at most 2 × (budget − 2) at the AS, no more.
  await replay({}, OPTIONS, local(), [burst(V, V, V), restart, burst(V, V, V, V, V)]);
});

test('fixed, with ledgerFile: one replica without Redis keeps its ledger across restarts and crashes', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'credgate-ledger-'));
  try {
    const restart: Action = { t: 'restart', r: 0 };
    const options = { ...OPTIONS, ledgerFile: join(dir, 'ledger.jsonl') };
    // A crash with a grant in flight: its reservation, written before it was sent, counts once it falls due.
    const crash: Action = { t: 'crash', r: 0, names: [V] };
    await replay({}, options, local(), [burst(V, V), crash, burst(V, V, V), restart, burst(V, V, V), restart, burst(V, V, V), restart, burst(V)]);
    // The file keeps her names linked too: after restarts her e-mail still shares her budget (the
    // AS sees at most budget − 1, the bound for linked names; it was 2 × (budget − 2) before).
    await replay({}, { ...options, ledgerFile: join(dir, 'again.jsonl') }, local(), [burst(V, V), restart, burst(E, E, E), restart, burst(V, V, V, E, E), password]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
