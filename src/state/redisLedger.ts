import { randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { UpstreamError } from '../errors.js';
import type { CredentialCache } from '../verify/cache.js';
import { grantLimit, SPENT_RETRY_AFTER_SECONDS, type Admission, type LedgerRule, type LocalLoginLedger, type LoginLedger, type SettleResult } from '../verify/loginLedger.js';
import { ledgerName } from '../verify/strategy.js';
import type { RedisClient, SharedRedis } from './redis.js';

/**
 * The login ledger's rule (verify/loginLedger.ts) in Redis, so that every replica spends one budget
 * per account. Each script runs atomically: the check and the reservation are one step for all
 * replicas. Keys (under `redisKeyPrefix`; names and subjects only as HMACs):
 * - `ledger:<name>` hash {f: failures, l: last failure ms}, `ledger:<name>:r` sorted set of
 *   reservations scored by the time they count as failures;
 * - `alias:<name>` set of subjects the name succeeded for; `account:<subject>` set of its names.
 * Every key lives `memoryMs` after its last write (a link, after its last use). Time is the caller's clock in ms (ARGV), passed
 * by every replica from its own clock: keep replicas' clocks in sync (NTP) as for any TTL.
 *
 * The scripts touch keys named from data (aliases), so in a Redis Cluster all of these keys share one
 * hash tag (`SharedRedis.slotPrefix('ledger')`, passed as the prefix in ARGV[1]), and each script is
 * given one of them as KEYS[1] (unused by the Lua) so that the cluster client sends it to that slot.
 * With `redisMinReplicas`, each write is followed by WAIT (`SharedRedis.acknowledged`).
 */
const COMMON = `
local prefix, now, memory = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local function ledger(n) return prefix .. 'ledger:' .. n end
-- The ledger's order of events (failures and successes; many can happen within one ms).
local function tick() return redis.call('INCR', prefix .. 'ledger:seq') end
-- Whether a success of the subject may clear name n: no other account was seen succeed under it.
local function own(n, subject)
  local subjects = redis.call('SMEMBERS', prefix .. 'alias:' .. n)
  if #subjects == 0 then return true end
  if #subjects > 1 then return false end
  return subject == '' or subjects[1] == subject
end
-- Overdue reservations become failures (at the time they fell due) → failures, last failure, reservations.
local function overdue(n)
  local k, r = ledger(n), ledger(n) .. ':r'
  local f = tonumber(redis.call('HGET', k, 'f') or '0')
  local l = tonumber(redis.call('HGET', k, 'l') or '0')
  local due = redis.call('ZRANGEBYSCORE', r, '-inf', now, 'WITHSCORES')
  for i = 2, #due, 2 do
    f = f + 1
    l = math.max(l, tonumber(due[i]))
  end
  if #due > 0 then
    redis.call('ZREMRANGEBYSCORE', r, '-inf', now)
    redis.call('HSET', k, 'q', tick())
  end
  redis.call('HSET', k, 'f', f, 'l', l)
  redis.call('PEXPIRE', k, memory)
  return f, l, redis.call('ZCARD', r)
end
-- Applies time to an account (all of its names): failures are forgotten memoryMs after the last
-- failure of ANY of them, all together, as the AS counts the account → failures, reservations.
local function age(names)
  local fs, ls, rs, last = {}, {}, {}, 0
  for i, n in ipairs(names) do
    fs[i], ls[i], rs[i] = overdue(n)
    if fs[i] > 0 then last = math.max(last, ls[i]) end
  end
  local forget = now - last >= memory
  local failures, reservations = 0, 0
  for i, n in ipairs(names) do
    if fs[i] > 0 then
      if forget then fs[i] = 0 else ls[i] = last end
      redis.call('HSET', ledger(n), 'f', fs[i], 'l', ls[i])
    end
    failures = failures + fs[i]
    reservations = reservations + rs[i]
  end
  return failures, reservations
end
-- The name and every name of every account it was seen succeed for. Every link used is kept
-- another memoryMs: a link must outlive the failures it groups (they are forgotten memoryMs after the
-- account's last one), or the names would be counted apart again while the AS still counts them together.
local function aliases(n)
  local seen, out = {}, {}
  local function add(x) if not seen[x] then seen[x] = true; out[#out + 1] = x end end
  add(n)
  for _, s in ipairs(redis.call('SMEMBERS', prefix .. 'alias:' .. n)) do
    local account = prefix .. 'account:' .. s
    for _, m in ipairs(redis.call('SMEMBERS', account)) do
      add(m)
      redis.call('PEXPIRE', prefix .. 'alias:' .. m, memory)
    end
    redis.call('PEXPIRE', account, memory)
  end
  redis.call('PEXPIRE', prefix .. 'alias:' .. n, memory)
  return out
end
`;

/** ARGV: prefix now memory | name limit reservationMs id → {1} admitted, {0, settledSpent} throttled. */
const ADMIT =
  COMMON +
  `
local name, limit, reservation, id = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local settled, reserved = age(aliases(name))
local unsettled = settled + reserved
if unsettled >= limit then
  if settled >= limit then return {0, 1} end
  return {0, 0}
end
local r = ledger(name) .. ':r'
redis.call('ZADD', r, now + reservation, id)
redis.call('PEXPIRE', r, math.max(memory, reservation))
redis.call('PEXPIRE', ledger(name), memory)
return {1}`;

/** ARGV: prefix now memory | name id result subject → the event's order. A success clears every name that names only this account. */
const SETTLE =
  COMMON +
  `
local name, id, result, subject = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
-- Only overdue reservations here: forgetting is decided for the whole account, at admission.
overdue(name)
local k = ledger(name)
local open = redis.call('ZREM', k .. ':r', id)
if result == 'failure' and open == 1 then
  redis.call('HINCRBY', k, 'f', 1)
  redis.call('HSET', k, 'l', now, 'q', tick())
end
if result == 'success' then
  local clear = {}
  if own(name, subject) then clear[#clear + 1] = name end
  if subject ~= '' then
    for _, n in ipairs(redis.call('SMEMBERS', prefix .. 'account:' .. subject)) do
      if own(n, subject) then clear[#clear + 1] = n end
    end
  end
  -- (HSET only where the hash exists: one made here would never expire.)
  for _, n in ipairs(clear) do
    if redis.call('EXISTS', ledger(n)) == 1 then redis.call('HSET', ledger(n), 'f', 0) end
  end
end
return tick()`;

/**
 * ARGV: prefix now memory | subject succeededAt name... → 1. `succeededAt` (or ''): the order of this
 * subject's successful password grant just settled; failures its names had before it are cleared,
 * as the AS cleared them (on an account's first success its other names are learnt only here).
 */
const LINK =
  COMMON +
  `
local subject, succeeded = ARGV[4], tonumber(ARGV[5])
local account = prefix .. 'account:' .. subject
for i = 6, #ARGV do
  redis.call('SADD', prefix .. 'alias:' .. ARGV[i], subject)
  redis.call('PEXPIRE', prefix .. 'alias:' .. ARGV[i], memory)
  redis.call('SADD', account, ARGV[i])
end
redis.call('PEXPIRE', account, memory)
if succeeded then
  for i = 6, #ARGV do
    local k = ledger(ARGV[i])
    local f = tonumber(redis.call('HGET', k, 'f') or '0')
    local q = tonumber(redis.call('HGET', k, 'q') or '0')
    if f > 0 and q <= succeeded and own(ARGV[i], subject) then redis.call('HSET', k, 'f', 0) end
  end
end
return 1`;

/** ARGV: prefix now memory | name → number of names reset. */
const RESET =
  COMMON +
  `
local names = aliases(ARGV[4])
for _, n in ipairs(names) do redis.call('DEL', ledger(n), ledger(n) .. ':r') end
return #names`;

/** Each script by the name it is defined under (the WAIT path sends it itself). */
const LUA = { credgateLedgerAdmit: ADMIT, credgateLedgerSettle: SETTLE, credgateLedgerLink: LINK, credgateLedgerReset: RESET } as const;

interface LedgerCommands {
  credgateLedgerAdmit(...args: (string | number)[]): Promise<[number, number?]>;
  credgateLedgerSettle(...args: (string | number)[]): Promise<number>;
  credgateLedgerLink(...args: (string | number)[]): Promise<number>;
  credgateLedgerReset(...args: (string | number)[]): Promise<number>;
}


/**
 * The shared ledger. When Redis cannot be asked, no replica may spend the budget on its own (with
 * R replicas that would be R budgets): a password not known to be good is not sent at all (the
 * decision is 503, as when the AS cannot be asked), while one that succeeded before is still
 * checked against this replica's own ledger, so the real user keeps getting in.
 */
export class RedisLoginLedger implements LoginLedger {
  /** Subjects whose password grant just succeeded (settled, names not yet linked) → that event's order in Redis. */
  readonly #succeeded = new LRUCache<string, number>({ max: 1000 });
  /** Admissions made locally because Redis did not answer → the reservation the Redis script may have made anyway. */
  readonly #fallbacks = new LRUCache<string, { name: string; id: string }>({ max: 10_000 });

  constructor(
    private readonly redis: SharedRedis,
    private readonly local: LocalLoginLedger,
    private readonly names: Pick<CredentialCache, 'digest'>,
    private readonly rule: LedgerRule,
    private readonly now: () => number = Date.now,
  ) {}

  static define(connection: RedisClient): void {
    connection.defineCommand('credgateLedgerAdmit', { numberOfKeys: 1, lua: ADMIT });
    connection.defineCommand('credgateLedgerSettle', { numberOfKeys: 1, lua: SETTLE });
    connection.defineCommand('credgateLedgerLink', { numberOfKeys: 1, lua: LINK });
    connection.defineCommand('credgateLedgerReset', { numberOfKeys: 1, lua: RESET });
  }

  #common(): (string | number)[] {
    return [this.redis.slotPrefix('ledger'), this.now(), this.rule.memoryMs];
  }

  /** The key a script is routed by (KEYS[1]): one it touches, in the ledger's slot. */
  #key(...parts: string[]): string {
    return this.redis.slotPrefix('ledger') + parts.join(':');
  }

  /** Runs a ledger script; with `redisMinReplicas`, acknowledged by that many replicas or thrown (see SharedRedis.acknowledged). */
  #script<T>(r: RedisClient, command: keyof LedgerCommands, key: string, ...args: (string | number)[]): Promise<T> {
    if (this.redis.minReplicas > 0) return this.redis.acknowledged<T>(r, LUA[command], key, args);
    return (r as unknown as Record<keyof LedgerCommands, (...a: (string | number)[]) => Promise<T>>)[command](key, ...args);
  }

  #name(username: string): string {
    return this.names.digest('login', ledgerName(username));
  }

  #subject(subject: string): string {
    return this.names.digest('subject', subject);
  }

  async admit(username: string, knownGood: boolean): Promise<Admission> {
    const name = this.#name(username);
    const id = `${this.now()}.${randomBytes(6).toString('base64url')}`;
    const answer = await this.redis.run('ledger', (r) =>
      this.#script<[number, number?]>(r, 'credgateLedgerAdmit', this.#key('ledger', name), ...this.#common(), name, grantLimit(this.rule, knownGood), this.rule.reservationMs, id),
    );
    if (answer === undefined) {
      // The script may have run and only its answer been lost (a command timeout): its reservation
      // must not be left to expire there as a failure (with the attacker's budget − 2, that would
      // take the known-good slot on every replica). Released if nothing is sent; else it is settled,
      // in Redis too, with the grant's result.
      const local = knownGood ? this.local.admitNow(username, true) : undefined;
      if (local?.admitted !== true) {
        await this.#settle(name, id, 'unsent', undefined);
        if (local !== undefined) return local;
        throw new UpstreamError('login protection cannot reach the shared state (redis): a password not known to be good is not sent', 'shared_state', 'unreachable', { sent: false });
      }
      this.#fallbacks.set(local.id, { name, id });
      return { ...local, key: `local:${local.key}` };
    }
    if (answer[0] === 1) return { admitted: true, key: name, id };
    return { admitted: false, retryAfterSeconds: answer[1] === 1 ? SPENT_RETRY_AFTER_SECONDS : 1 };
  }

  async settle(admission: Extract<Admission, { admitted: true }>, result: SettleResult, subject?: string, username?: string): Promise<void> {
    if (admission.key.startsWith('local:')) {
      await this.local.settle({ ...admission, key: admission.key.slice(6) }, result, subject, username);
      const remote = this.#fallbacks.get(admission.id);
      this.#fallbacks.delete(admission.id);
      // A success clears the account in Redis too, as at the AS; a failure counts there only if the
      // reservation got there.
      if (remote !== undefined) await this.#settle(remote.name, remote.id, result, subject);
      return;
    }
    await this.#settle(admission.key, admission.id, result, subject);
  }

  async #settle(name: string, id: string, result: SettleResult, subject: string | undefined): Promise<void> {
    // Not reaching Redis here leaves the reservation to expire there, as a failure: the safe side.
    const order = await this.redis.run('ledger', (r) =>
      this.#script<number>(r, 'credgateLedgerSettle', this.#key('ledger', name), ...this.#common(), name, id, result, subject === undefined ? '' : this.#subject(subject)),
    );
    if (result === 'success' && subject !== undefined && typeof order === 'number') this.#succeeded.set(subject, order);
  }

  /** Shares what this replica learnt: `names` are the login names `subject` succeeded under. */
  async link(subject: string, names: readonly string[]): Promise<void> {
    if (names.length === 0) return;
    const succeeded = this.#succeeded.get(subject);
    this.#succeeded.delete(subject);
    await this.redis.run('ledger', (r) =>
      this.#script<number>(r, 'credgateLedgerLink', this.#key('account', this.#subject(subject)), ...this.#common(), this.#subject(subject), succeeded ?? '', ...new Set(names.map((n) => this.#name(n)))),
    );
  }

  async reset(username: string): Promise<void> {
    await this.local.reset(username);
    await this.redis.run('ledger', (r) => this.#script<number>(r, 'credgateLedgerReset', this.#key('ledger', this.#name(username)), ...this.#common(), this.#name(username)));
  }
}
