import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { Policy, type PolicyRequest, type PolicyVerdict } from '../../src/policy/policy.js';
import { parseTarget } from '../../src/policy/target.js';
import { TARGETS } from '../fixtures/targets.js';
import { policySchema } from '../../src/policy/schema.js';
import { loadPolicyFile } from '../../src/policy/store.js';
import { missingScopes } from '../../src/verify/scopes.js';

/** A policy whose evaluate takes the raw URI and parses it as the pipeline does: ambiguous → denied. */
const policy = (doc: unknown) => {
  const p = new Policy(policySchema.parse(doc));
  return Object.assign(p, {
    evaluate(request: PolicyRequest & { uri?: string }): PolicyVerdict {
      const parsed = request.uri === undefined ? undefined : parseTarget(request.uri);
      if (parsed !== undefined && !parsed.ok) return { effect: 'deny', rule: undefined, why: parsed.why };
      return Policy.prototype.evaluate.call(p, { ...request, target: parsed?.target });
    },
  });
};
const http = (method: string, uri: string, host = 'git.example.com') => ({ protocol: 'http' as const, method, uri, host });

describe('policy matching', () => {
  const git = policy({
    audience: 'https://git.example.com',
    rules: [
      { name: 'admin-off', match: { path: '/admin/**' }, deny: true },
      { name: 'push-refs', match: { method: 'GET', path: '/**/info/refs', query: { service: 'git-receive-pack' } }, scopes: ['write:repo'] },
      { name: 'push', match: { method: 'POST', path: '/**/git-receive-pack' }, scopes: ['write:repo'] },
      { name: 'other-host', match: { host: '*.internal.example.com' }, scopes: ['internal'], audience: 'https://internal.example.com' },
      { name: 'fetch', match: { method: ['GET', 'POST'], path: '/**' }, scopes: ['read:repo'] },
      { name: 'imap', match: { protocol: 'imap' }, scopes: ['read:mail'] },
    ],
  });
  const cases: Array<[string, PolicyRequest & { uri?: string }, string | undefined, readonly string[] | 'deny']> = [
    ['first match wins: push refs before the catch-all fetch', http('GET', '/r.git/info/refs?service=git-receive-pack'), 'push-refs', ['write:repo']],
    ['query value must match: upload-pack is a fetch', http('GET', '/r.git/info/refs?service=git-upload-pack'), 'fetch', ['read:repo']],
    ['no query parameter: a fetch', http('GET', '/r.git/info/refs'), 'fetch', ['read:repo']],
    ['method must match: GET of git-receive-pack is not the push rule', http('GET', '/r.git/git-receive-pack'), 'fetch', ['read:repo']],
    ['POST git-receive-pack is a push', http('POST', '/group/sub/r.git/git-receive-pack'), 'push', ['write:repo']],
    ['HEAD matches a GET rule', http('HEAD', '/r.git/HEAD'), 'fetch', ['read:repo']],
    ['methods are case-insensitive', http('post', '/r.git/git-receive-pack'), 'push', ['write:repo']],
    ['a method no rule lists falls to the default (deny)', http('DELETE', '/r.git'), undefined, 'deny'],
    ['a deny rule denies whatever else would match', http('GET', '/admin/users'), 'admin-off', 'deny'],
    ['** matches zero segments too', http('GET', '/info/refs?service=git-receive-pack'), 'push-refs', ['write:repo']],
    ['dot-segments are ambiguous (a backend may get them raw): denied before any rule', http('GET', '/r.git/../admin/x'), undefined, 'deny'],
    ['encoded dot-segments too', http('GET', '/r.git/%2e%2e/admin/x'), undefined, 'deny'],
    ['dot segments are denied even where they would resolve to an allowed path', http('GET', '/admin/../r.git/info/refs'), undefined, 'deny'],
    ['percent-encoded letters are decoded', http('GET', '/%61dmin/x'), 'admin-off', 'deny'],
    ['repeated slashes are ambiguous: denied', http('GET', '//admin//x'), undefined, 'deny'],
    ['an encoded slash is ambiguous: denied', http('GET', '/r.git%2f..%2fadmin/x'), undefined, 'deny'],
    ['an encoded NUL is denied', http('GET', '/r.git/%00/HEAD'), undefined, 'deny'],
    ['broken percent-encoding is denied', http('GET', '/r.git/%zz'), undefined, 'deny'],
    ['a query key repeated with different values is denied', http('GET', '/r.git/info/refs?service=git-upload-pack&service=git-receive-pack'), undefined, 'deny'],
    ['a query name without = is ambiguous (git reads ?service&git-receive-pack as service=git-receive-pack): denied', http('GET', '/r.git/info/refs?service&git-receive-pack'), undefined, 'deny'],
    ['a ; in the query is ambiguous (some servers read it as &): denied', http('GET', '/r.git/info/refs?x=1;service=git-receive-pack'), undefined, 'deny'],
    ['an empty query parameter is ambiguous (git reads the next one as its value): denied', http('GET', '/r.git/info/refs?x=1&&service=git-upload-pack'), undefined, 'deny'],
    ['a leading & in the query is ambiguous too: denied', http('GET', '/r.git/info/refs?&service=git-upload-pack'), undefined, 'deny'],
    ['an encoded = in the query is ambiguous (a server that decodes first splits there): denied', http('GET', '/r.git/info/refs?service%3Dgit-receive-pack'), undefined, 'deny'],
    ['an encoded & in the query is ambiguous: denied', http('GET', '/r.git/info/refs?x=1%26service=git-receive-pack'), undefined, 'deny'],
    ['a trailing & is read alike everywhere', http('GET', '/r.git/info/refs?service=git-receive-pack&'), 'push-refs', ['write:repo']],
    ['a query key repeated with the same value is fine', http('GET', '/r.git/info/refs?service=git-receive-pack&service=git-receive-pack'), 'push-refs', ['write:repo']],
    ['host globs match subdomains, case-insensitively, ignoring the port', http('GET', '/x', 'CI.Internal.Example.com:8443'), 'other-host', ['internal']],
    ['host glob does not match the bare parent domain', http('GET', '/x', 'internal.example.com'), 'fetch', ['read:repo']],
    ['absolute-form URIs are reduced to the path', http('POST', 'https://git.example.com/r.git/git-receive-pack'), 'push', ['write:repo']],
    ['rules without protocol apply to HTTP only: IMAP finds its own rule', { protocol: 'imap' }, 'imap', ['read:mail']],
    ['a protocol no rule names falls to mailDefault (deny)', { protocol: 'smtp' }, undefined, 'deny'],
    ['an HTTP request with no known path matches no path rule', { protocol: 'http', method: 'GET' }, undefined, 'deny'],
  ];
  for (const [name, request, rule, expected] of cases) {
    test(name, () => {
      const verdict = git.evaluate(request);
      assert.equal(verdict.rule, rule);
      if (expected === 'deny') assert.equal(verdict.effect, 'deny');
      else {
        assert.equal(verdict.effect, 'require');
        if (verdict.effect === 'require') assert.deepEqual(verdict.scopes, expected);
      }
    });
  }

  describe('a path whose rule changes under case or a trailing / (as Express, IIS, ASP.NET read it) is ambiguous', () => {
    const app = policy({
      rules: [
        { name: 'admin', match: { path: '/app/admin/**' }, deny: true },
        { name: 'transfer', match: { method: 'POST', path: '/app/api/transfer' }, scopes: ['payments:write'] },
        { name: 'docs', match: { path: '/app/Docs/' }, scopes: ['docs'] },
        { name: 'app', match: { path: '/app/**' }, scopes: ['read'] },
      ],
    });
    const cases: Array<[string, string, string, string | undefined]> = [
      ['regression: a capital letter slipped past a deny rule', 'GET', '/app/ADMIN/users', undefined],
      ['any case', 'GET', '/app/Admin/x', undefined],
      ['regression: a trailing / slipped past a stricter rule', 'POST', '/app/api/transfer/', undefined],
      ['case in the last segment too', 'POST', '/app/api/TRANSFER', undefined],
      ['the exact spelling keeps its rule', 'POST', '/app/api/transfer', 'transfer'],
      ['the deny rule as written', 'GET', '/app/admin/users', 'admin'],
      ['capitals that change no rule change nothing', 'GET', '/app/Other/File.TXT', 'app'],
      ['a trailing / that changes no rule changes nothing', 'GET', '/app/other/', 'app'],
      ['a glob that ends in / matches its own spelling', 'GET', '/app/Docs/', 'docs'],
      ['and the same path without the / is ambiguous (a backend may redirect or serve it alike)', 'GET', '/app/Docs', undefined],
      ['a glob with capitals, read in another case, is ambiguous', 'GET', '/app/docs/', undefined],
    ];
    for (const [name, method, uri, rule] of cases) {
      test(`${name}: ${method} ${uri}`, () => {
        const verdict = app.evaluate(http(method, uri));
        assert.equal(verdict.rule, rule, JSON.stringify(verdict));
        if (rule === undefined) assert.match(verdict.effect === 'deny' ? verdict.why : '', /another rule when read without regard to case or a trailing \//);
        else assert.equal(verdict.effect, rule === 'admin' ? 'deny' : 'require');
      });
    }
  });

  test('a policy that matches on no query parameter lets an ambiguous query through: the query decides nothing there', () => {
    const paths = policy({ rules: [{ name: 'all', match: { path: '/**' }, scopes: ['read'] }] });
    for (const uri of ['/download?raw', '/a?x=1;y=2', '/a?x=%26']) assert.equal(paths.evaluate(http('GET', uri)).rule, 'all', uri);
  });

  test("an ambiguous query's reason never repeats the query (it can carry a token)", () => {
    const verdict = git.evaluate(http('GET', '/r.git/info/refs?secret-token-value&x=1'));
    assert.equal(verdict.effect, 'deny');
    assert.ok(verdict.effect === 'deny' && !verdict.why?.includes('secret-token-value'), JSON.stringify(verdict));
  });

  test('a rule audience overrides the policy audience, which is the default for every rule', () => {
    const other = git.evaluate(http('GET', '/x', 'ci.internal.example.com'));
    const fetch = git.evaluate(http('GET', '/x'));
    assert.equal(other.effect === 'require' && other.audience, 'https://internal.example.com');
    assert.equal(fetch.effect === 'require' && fetch.audience, 'https://git.example.com');
    assert.deepEqual([...git.audiences].sort(), ['https://git.example.com', 'https://internal.example.com']);
  });

  test('query true means present, false means absent', () => {
    const p = policy({ rules: [
      { name: 'has-token', match: { query: { token: true } }, deny: true },
      { name: 'no-debug', match: { query: { debug: false } }, scopes: ['a'] },
    ], default: 'allow' });
    assert.equal(p.evaluate(http('GET', '/x?token=1')).rule, 'has-token');
    assert.equal(p.evaluate(http('GET', '/x?token=')).rule, 'has-token');
    assert.equal(p.evaluate(http('GET', '/x')).rule, 'no-debug');
    assert.equal(p.evaluate(http('GET', '/x?debug=1')).rule, 'default');
  });

  test('a query list accepts any of its values, and every given value must be one of them', () => {
    const p = policy({ rules: [{ name: 'svc', match: { query: { service: ['a', 'b'] } }, scopes: ['s'] }] });
    assert.equal(p.evaluate(http('GET', '/x?service=a')).rule, 'svc');
    assert.equal(p.evaluate(http('GET', '/x?service=b')).rule, 'svc');
    assert.equal(p.evaluate(http('GET', '/x?service=c')).effect, 'deny');
  });

  test('default deny unless the policy sets a default; allow means any valid credential', () => {
    assert.deepEqual(policy({ rules: [] }).evaluate(http('GET', '/x')), { effect: 'deny', rule: undefined, why: 'no rule matches and the policy has no default' });
    const allow = policy({ default: 'allow' }).evaluate(http('GET', '/x'));
    assert.equal(allow.effect, 'require');
    assert.deepEqual(allow.effect === 'require' && allow.scopes, []);
    const scoped = policy({ default: { scopes: ['basic'], scopeStrategy: 'hierarchic' } }).evaluate(http('GET', '/x'));
    assert.equal(scoped.effect === 'require' && scoped.scopeStrategy, 'hierarchic');
    assert.deepEqual(scoped.effect === 'require' && scoped.scopes, ['basic']);
  });

  test('default applies to HTTP only: a mail login is decided by a rule naming its protocol, or by mailDefault', () => {
    const httpOnly = policy({ default: 'allow', rules: [{ name: 'web', match: { path: '/**' }, scopes: [] }] });
    for (const protocol of ['imap', 'pop3', 'smtp'] as const) assert.equal(httpOnly.evaluate({ protocol }).effect, 'deny', protocol);
    assert.ok(httpOnly.warnings().some((w) => /HTTP only/.test(w)));
    const mail = policy({ default: 'allow', mailDefault: { scopes: ['read:mail'] } });
    const imap = mail.evaluate({ protocol: 'imap' });
    assert.equal(imap.effect === 'require' && imap.rule, 'mailDefault');
    assert.deepEqual(imap.effect === 'require' && imap.scopes, ['read:mail']);
    assert.ok(mail.warnings().some((w) => /mailDefault is not deny/.test(w)));
    assert.deepEqual(policy({ rules: [{ name: 'imap', match: { protocol: 'imap' } }] }).warnings(), []);
  });

  test('a rule scope strategy overrides the policy default', () => {
    const p = policy({ scopeStrategy: 'wildcard', rules: [
      { name: 'h', match: { path: '/h/**' }, scopes: ['repo:read'], scopeStrategy: 'hierarchic' },
      { name: 'w', match: { path: '/**' }, scopes: ['repo:read'] },
    ] });
    const h = p.evaluate(http('GET', '/h/x'));
    const w = p.evaluate(http('GET', '/w/x'));
    assert.equal(h.effect === 'require' && h.scopeStrategy, 'hierarchic');
    assert.equal(w.effect === 'require' && w.scopeStrategy, 'wildcard');
  });
});

describe('scope strategies', () => {
  const cases: Array<['exact' | 'hierarchic' | 'wildcard', string[], string, boolean]> = [
    ['exact', ['read:repo'], 'read:repo', true],
    ['exact', ['repo'], 'repo:read', false],
    ['exact', ['repo:*'], 'repo:read', false],
    ['hierarchic', ['repo'], 'repo:read', true],
    ['hierarchic', ['repo'], 'repo:read:issues', true],
    ['hierarchic', ['repo'], 'repo', true],
    ['hierarchic', ['repo'], 'repository', false],
    ['hierarchic', ['repo:read'], 'repo', false],
    ['hierarchic', ['repo:*'], 'repo:read', false],
    ['wildcard', ['repo:*'], 'repo:read', true],
    ['wildcard', ['repo:*'], 'repo:read:issues', true],
    ['wildcard', ['repo:*'], 'repo', false],
    ['wildcard', ['*:repo'], 'write:repo', true],
    ['wildcard', ['*:repo'], 'write:mail', false],
    ['wildcard', ['*:repo'], 'write:repo:x', false],
    ['wildcard', ['a:*:c'], 'a:b:c', true],
    ['wildcard', ['a:*:c'], 'a:b:d', false],
    ['wildcard', ['repo'], 'repo:read', false],
    ['wildcard', ['read:repo'], 'read:repo', true],
  ];
  for (const [strategy, granted, required, ok] of cases) {
    test(`${strategy}: ${granted.join(' ')} ${ok ? 'grants' : 'does not grant'} ${required}`, () => {
      assert.deepEqual(missingScopes([required], granted, strategy), ok ? [] : [required]);
    });
  }
  test('every required scope must be granted; only the missing ones are listed', () => {
    assert.deepEqual(missingScopes(['read:repo', 'write:repo', 'read:mail'], ['read:repo', 'read:mail'], 'exact'), ['write:repo']);
    assert.deepEqual(missingScopes(['repo:read', 'mail:send'], ['repo'], 'hierarchic'), ['mail:send']);
  });
});

describe('request targets: one parse, ambiguous ones refused', () => {
  for (const { target, path, why } of TARGETS) {
    test(`${JSON.stringify(target)} → ${path === undefined ? 'refused' : JSON.stringify(path)} (${why})`, () => {
      const parsed = parseTarget(target);
      assert.equal(parsed.ok ? parsed.target.path : undefined, path);
    });
  }
  test('absolute-form keeps its raw path (URL() would resolve the dots away)', () => {
    assert.equal(parseTarget('https://git.example.com/a/../admin').ok, false);
    const ok = parseTarget('https://git.example.com/r.git/info/refs?service=git-upload-pack');
    assert.ok(ok.ok);
    assert.equal(ok.ok && ok.target.path, '/r.git/info/refs');
    assert.equal(ok.ok && ok.target.query.get('service'), 'git-upload-pack');
  });
  test('a fragment or control character in the target is refused', () => {
    assert.equal(parseTarget('/r.git/info/refs#frag').ok, false);
    assert.equal(parseTarget('/r.git/info/refs?x=%0a').ok, false);
    assert.equal(parseTarget('/a b').ok, false);
  });
});

describe('policy files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'credgate-policy-'));
  const file = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };
  const invalid: Array<[string, string, RegExp]> = [
    ['not YAML', 'rules: [', /not valid YAML/],
    ['unknown top-level key', 'rulez: []\n', /unknown key\(s\) rulez/],
    ['unknown match key', 'rules:\n  - name: a\n    match: { pathh: /x }\n', /rules\[0\]\.match: unknown key\(s\) pathh/],
    ['path not starting with /', 'rules:\n  - name: a\n    match: { path: "x/**" }\n', /rules\[0\]\.match\.path: must start with \//],
    ['bad scope token', 'rules:\n  - name: a\n    scopes: ["read repo"]\n', /rules\[0\]\.scopes\[0\]: must be an RFC 6749 scope-token/],
    ['unknown scope strategy', 'scopeStrategy: fuzzy\n', /scopeStrategy/],
    ['unknown protocol', 'rules:\n  - name: a\n    match: { protocol: ftp }\n', /rules\[0\]\.match\.protocol/],
    ['duplicate rule names', 'rules:\n  - name: a\n  - name: a\n', /rules\[1\]\.name: rule name a is used twice/],
    ['deny rule with scopes', 'rules:\n  - name: a\n    deny: true\n    scopes: [x]\n', /a deny rule takes no scopes/],
    ['duplicate YAML keys', 'rules: []\nrules: []\n', /not valid YAML/],
    ['a list where a mapping belongs', '- a\n- b\n', /invalid/],
  ];
  for (const [name, text, message] of invalid) {
    test(`refused with a message that says where: ${name}`, () => {
      assert.throws(() => loadPolicyFile(file(`${name.replace(/\W/g, '_')}.yaml`, text)), (err: Error & { code?: string; key?: string }) => {
        assert.equal(err.code, 'ERR_CONFIG');
        assert.equal(err.key, 'policyFile');
        assert.match(err.message, message);
        return true;
      });
    });
  }
  test('a missing file is refused naming the file', () => {
    assert.throws(() => loadPolicyFile(join(dir, 'nope.yaml')), /cannot read policy file .*nope\.yaml: ENOENT/);
  });
  test('the shipped example policies are valid', () => {
    for (const example of ['deploy/policies/git.yaml', 'deploy/policies/mail.yaml']) {
      assert.ok(loadPolicyFile(example).policy.ruleCount > 0, example);
    }
  });
  test('an empty file is a policy with no rules: everything is denied', () => {
    const { policy: p } = loadPolicyFile(file('empty.yaml', ''));
    assert.equal(p.evaluate(http('GET', '/')).effect, 'deny');
  });
});
