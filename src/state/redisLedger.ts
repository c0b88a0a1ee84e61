import { randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { UpstreamError } from '../errors.js';
import type { CredentialCache } from '../verify/cache.js';
import { grantLimit, SPENT_RETRY_AFTER_SECONDS, type Admission, type LedgerRule, type LocalLoginLedger, type LoginLedger, type SettleResult } from '../verify/loginLedger.js';
import { ledgerName, loginClass } from '../verify/strategy.js';
import type { RedisClient, SharedRedis } from './redis.js';

/**
 * The login ledger's rule (verify/loginLedger.ts) in Redis, so that every replica spends one budget
 * per account. Each script runs atomically: the check and the reservation are one step for all
 * replicas. Keys (under `redisKeyPrefix`; names, classes and subjects only as HMACs):
 * - `ledger:<name>` hash {fl: the failures, "seq:class:reservation" separated by spaces; l: last
 *   failure ms}; `ledger:<name>:r` sorted set of reservations "id|class|seq", scored by the time
 *   they count as failures; `ledger:seq` the ledger's order of events;
 * - `alias:<name>` set of subjects the name succeeded for; `account:<subject>` set of its names.
 * Every key lives `memoryMs` after its last write (a link, after its last use); with memory 0
 * (never forget) they stay until a success or an admin reset empties them. Time is the caller's
 * clock in ms (ARGV), passed by every replica from its own clock: keep replicas' clocks in sync
 * (NTP) as for any TTL.
 *
 * The scripts touch keys named from data (aliases), so in a Redis Cluster all of these keys share one
 * hash tag (`SharedRedis.slotPrefix('ledger')`, passed as the prefix in ARGV[1]), and each script is
 * given one of them as KEYS[1] (unused by the Lua) so that the cluster client sends it to that slot.
 * With `redisMinReplicas`, each write is followed by WAIT (`SharedRedis.acknowledged`).
 */
const COMMON = `
local prefix, now, memory = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local function ledger(n) return prefix .. 'ledger:' .. n end
-- memory 0: nothing is forgotten by time.
local function keep(k) if memory > 0 then redis.call('PEXPIRE', k, memory) else redis.call('PERSIST', k) end end
-- The ledger's order of events (admissions and failures; many can happen within one ms).
local function tick() return redis.call('INCR', prefix .. 'ledger:seq') end
-- (Every caller writes the list back with store.)
local function failures(k)
  local t = {}
  for item in string.gmatch(redis.call('HGET', k, 'fl') or '', '%S+') do t[#t + 1] = item end
  -- Failures an earlier version counted (a number in 'f', no order or class): each becomes one that
  -- any success of the account clears (class '*'), as that version cleared them.
  local legacy = tonumber(redis.call('HGET', k, 'f') or '0')
  if legacy > 0 then
    for _ = 1, legacy do t[#t + 1] = '0:*:' end
    redis.call('HDEL', k, 'f', 'q')
  end
  return t
end
-- Writes a name's failures back (the hash goes when none is left).
local function store(k, t, l)
  if #t == 0 then redis.call('DEL', k) return end
  redis.call('HSET', k, 'fl', table.concat(t, ' '), 'l', l)
  keep(k)
end
-- Drops the failures of class c (or any class, c == false) recorded before seq \`before\`, and the one
-- that reservation \`id\` became by falling due: what a success cleared at the AS.
local function clear(n, c, before, id)
  local k = ledger(n)
  local kept = {}
  for _, item in ipairs(failures(k)) do
    local q, ic, iid = string.match(item, '^(%d+):([^:]*):(.*)$')
    local cleared = (id ~= '' and iid == id) or ((c == false or ic == c or ic == '*') and tonumber(q) < before)
    if not cleared then kept[#kept + 1] = item end
  end
  store(k, kept, tonumber(redis.call('HGET', k, 'l') or '0'))
end
-- Overdue reservations become failures (at the time they fell due) → failures, last failure, reservations.
local function overdue(n)
  local k, r = ledger(n), ledger(n) .. ':r'
  local fl = failures(k)
  local l = tonumber(redis.call('HGET', k, 'l') or '0')
  local due = redis.call('ZRANGEBYSCORE', r, '-inf', now, 'WITHSCORES')
  for i = 1, #due, 2 do
    local id, c = string.match(due[i], '^([^|]*)|([^|]*)|')
    -- A reservation of an earlier version (its id alone): one any success clears.
    if id == nil then id, c = due[i], '*' end
    fl[#fl + 1] = tick() .. ':' .. c .. ':' .. id
    l = math.max(l, tonumber(due[i + 1]))
  end
  if #due > 0 then redis.call('ZREMRANGEBYSCORE', r, '-inf', now) end
  store(k, fl, l)
  return fl, l, redis.call('ZCARD', r)
end
-- Applies time to an account (all of its names): failures are forgotten memoryMs after the last
-- failure of ANY of them, all together, as the AS counts the account → failures, reservations.
local function age(names)
  local fs, ls, rs, last = {}, {}, {}, 0
  for i, n in ipairs(names) do
    fs[i], ls[i], rs[i] = overdue(n)
    if #fs[i] > 0 then last = math.max(last, ls[i]) end
  end
  local forget = memory > 0 and now - last >= memory
  local failed, reservations = 0, 0
  for i, n in ipairs(names) do
    if #fs[i] > 0 then
      if forget then fs[i] = {} end
      store(ledger(n), fs[i], last)
    end
    failed = failed + #fs[i]
    reservations = reservations + rs[i]
  end
  return failed, reservations
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
      keep(prefix .. 'alias:' .. m)
    end
    keep(account)
  end
  if redis.call('EXISTS', prefix .. 'alias:' .. n) == 1 then keep(prefix .. 'alias:' .. n) end
  return out
end
`;

/** ARGV: prefix now memory | name limit reservationMs id class → {1, seq} admitted, {0, settledSpent} throttled. */
const ADMIT =
  COMMON +
  `
local name, limit, reservation, id, c = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], ARGV[8]
local settled, reserved = age(aliases(name))
local unsettled = settled + reserved
if unsettled >= limit then
  if settled >= limit then return {0, 1} end
  return {0, 0}
end
local r = ledger(name) .. ':r'
local seq = tick()
redis.call('ZADD', r, now + reservation, id .. '|' .. c .. '|' .. seq)
-- (Emptied by settlements and by falling due; kept at least until its last reservation falls due.)
if memory > 0 then redis.call('PEXPIRE', r, math.max(memory, reservation)) else redis.call('PERSIST', r) end
return {1, seq}`;

/**
 * ARGV: prefix now memory | name id result class seq → 1. A success clears the failures of its
 * class answered before its admission (`seq`, or the reservation's own if the answer to the
 * admission was lost: seq '').
 */
const SETTLE =
  COMMON +
  `
local name, id, result, c, seq = ARGV[4], ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
-- Only overdue reservations here: forgetting is decided for the whole account, at admission.
overdue(name)
local k, r = ledger(name), ledger(name) .. ':r'
local open = false
for _, m in ipairs(redis.call('ZRANGE', r, 0, -1)) do
  local mid, mc, mq = string.match(m, '^([^|]*)|([^|]*)|(%d+)$')
  if mid == id then
    open = true
    seq = seq or tonumber(mq)
    redis.call('ZREM', r, m)
  end
end
if result == 'failure' and open then
  local fl = failures(k)
  fl[#fl + 1] = tick() .. ':' .. c .. ':'
  store(k, fl, now)
elseif result == 'success' then
  clear(name, c, seq or 0, open and '' or id)
end
return 1`;

/**
 * ARGV: prefix now memory | subject succeededAt (name class)... → 1. `succeededAt` (or ''): the
 * admission of this subject's successful password grant just settled; failures of these names'
 * classes answered before it are cleared, as the AS cleared them (on an account's first success its
 * other names are learnt only here).
 */
const LINK =
  COMMON +
  `
local subject, succeeded = ARGV[4], tonumber(ARGV[5])
local account = prefix .. 'account:' .. subject
for i = 6, #ARGV, 2 do
  redis.call('SADD', prefix .. 'alias:' .. ARGV[i], subject)
  keep(prefix .. 'alias:' .. ARGV[i])
  redis.call('SADD', account, ARGV[i])
end
keep(account)
if succeeded then
  for i = 6, #ARGV, 2 do clear(ARGV[i], ARGV[i + 1], succeeded, '') end
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
  readonly #fallbacks = new LRUCache<string, { name: string; id: string; cls: string }>({ max: 10_000 });

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
    // 0: never forget (the rule's Infinity).
    return [this.redis.slotPrefix('ledger'), this.now(), Number.isFinite(this.rule.memoryMs) ? this.rule.memoryMs : 0];
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

  #class(username: string): string {
    return this.names.digest('login-class', loginClass(username));
  }

  #subject(subject: string): string {
    return this.names.digest('subject', subject);
  }

  async admit(username: string, knownGood: boolean): Promise<Admission> {
    const name = this.#name(username);
    const cls = this.#class(username);
    const id = `${this.now()}.${randomBytes(6).toString('base64url')}`;
    const answer = await this.redis.run('ledger', (r) =>
      this.#script<[number, number?]>(r, 'credgateLedgerAdmit', this.#key('ledger', name), ...this.#common(), name, grantLimit(this.rule, knownGood), this.rule.reservationMs, id, cls),
    );
    if (answer === undefined) {
      // The script may have run and only its answer been lost (a command timeout): its reservation
      // must not be left to expire there as a failure (with the attacker's budget − 2, that would
      // take the known-good slot on every replica). Released if nothing is sent; else it is settled,
      // in Redis too, with the grant's result.
      const local = knownGood ? this.local.admitNow(username, true) : undefined;
      if (local?.admitted !== true) {
        await this.#settle(name, id, 'unsent', cls, undefined, undefined);
        if (local !== undefined) return local;
        throw new UpstreamError('login protection cannot reach the shared state (redis): a password not known to be good is not sent', 'shared_state', 'unreachable', { sent: false });
      }
      this.#fallbacks.set(local.id, { name, id, cls });
      return { ...local, key: `local:${local.key}` };
    }
    if (answer[0] === 1) return { admitted: true, key: name, id, seq: answer[1]!, cls };
    return { admitted: false, retryAfterSeconds: answer[1] === 1 ? SPENT_RETRY_AFTER_SECONDS : 1 };
  }

  async settle(admission: Extract<Admission, { admitted: true }>, result: SettleResult, subject?: string): Promise<void> {
    if (admission.key.startsWith('local:')) {
      await this.local.settle({ ...admission, key: admission.key.slice(6) }, result, subject);
      const remote = this.#fallbacks.get(admission.id);
      this.#fallbacks.delete(admission.id);
      // A success clears the account in Redis too, as at the AS; a failure counts there only if the
      // reservation got there.
      // (Its place in Redis's order is unknown: the script takes the reservation's own.)
      if (remote !== undefined) await this.#settle(remote.name, remote.id, result, remote.cls, undefined, subject);
      return;
    }
    await this.#settle(admission.key, admission.id, result, admission.cls, admission.seq, subject);
  }

  async #settle(name: string, id: string, result: SettleResult, cls: string, seq: number | undefined, subject: string | undefined): Promise<void> {
    // Not reaching Redis here leaves the reservation to expire there, as a failure: the safe side.
    const done = await this.redis.run('ledger', (r) =>
      this.#script<number>(r, 'credgateLedgerSettle', this.#key('ledger', name), ...this.#common(), name, id, result, cls, seq ?? ''),
    );
    // With the admission's place unknown (lost answer), the link clears nothing: the safe side.
    if (result === 'success' && subject !== undefined && done !== undefined && seq !== undefined) this.#succeeded.set(subject, seq);
  }

  /** Shares what this replica learnt: `names` are the login names `subject` succeeded under. */
  async link(subject: string, names: readonly string[]): Promise<void> {
    if (names.length === 0) return;
    const succeeded = this.#succeeded.get(subject);
    this.#succeeded.delete(subject);
    const pairs = new Map<string, [string, string]>();
    for (const n of names) {
      const pair: [string, string] = [this.#name(n), this.#class(n)];
      pairs.set(pair.join(' '), pair);
    }
    const namesAndClasses = [...pairs.values()].flat();
    await this.redis.run('ledger', (r) =>
      this.#script<number>(r, 'credgateLedgerLink', this.#key('account', this.#subject(subject)), ...this.#common(), this.#subject(subject), succeeded ?? '', ...namesAndClasses),
    );
  }

  async reset(username: string): Promise<void> {
    await this.local.reset(username);
    await this.redis.run('ledger', (r) => this.#script<number>(r, 'credgateLedgerReset', this.#key('ledger', this.#name(username)), ...this.#common(), this.#name(username)));
  }
}
