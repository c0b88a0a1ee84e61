import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DecisionPipeline } from '../../src/decide/pipeline.js';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics/registry.js';
import { Policy } from '../../src/policy/policy.js';
import { policySchema } from '../../src/policy/schema.js';
import type { Verifier } from '../../src/verify/verifier.js';

const GIT = 'https://git.example.com';
const MAIL = 'https://mail.example.com';
const policy = new Policy(
  policySchema.parse({
    rules: [
      { name: 'mail-api', match: { path: '/mail/**' }, scopes: ['read'], audience: MAIL },
      { name: 'git', match: { path: '/**' }, scopes: ['read'] },
    ],
  }),
);
const pipeline = new DecisionPipeline({} as Verifier, policy, { audience: GIT, mailScopes: { imap: [], pop3: [], smtp: [] } }, new Metrics('test'), createLogger({ level: 'silent' }));
const ask = (target: string, pinnedAudience?: string) => pipeline.requirement({ protocol: 'http', original: { method: 'GET', host: 'x.example.com', target }, pinnedScopes: [], pinnedAudience });

test("a caller's audience may not contradict a rule that names none: that rule requires the configured one (regression: another API's tokens were accepted)", () => {
  const swapped = ask('/r.git/info/refs', MAIL);
  assert.ok('allow' in swapped && !swapped.allow, JSON.stringify(swapped));
  assert.equal('reason' in swapped ? swapped.reason : undefined, 'denied_by_policy');
  assert.equal('rule' in swapped ? swapped.rule : undefined, 'git');
});

test('the configured audience, asked for or not, passes a rule that names none; a rule that names one takes only its own', () => {
  for (const pinned of [undefined, GIT]) {
    const needs = ask('/r.git/info/refs', pinned);
    assert.ok(!('allow' in needs), JSON.stringify(needs));
    assert.equal(needs.rule, 'git');
  }
  const mail = ask('/mail/inbox', MAIL);
  assert.ok(!('allow' in mail) && mail.audience === MAIL, JSON.stringify(mail));
  const wrong = ask('/mail/inbox', GIT);
  assert.ok('allow' in wrong && wrong.reason === 'denied_by_policy', JSON.stringify(wrong));
});
