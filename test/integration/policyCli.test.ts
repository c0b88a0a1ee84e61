import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { cli, CLI } from '../fixtures/cli.js';

// Not dev mode's own default audience: deploy/policies/git.yaml must work with whatever CREDGATE_AUDIENCE is.
const AUDIENCE = 'https://git.example.com';
const CLIENT = { clientId: 'credgate-cli', clientSecret: 'cli-client-secret-value' };

describe('credgate policy check / explain, and SIGHUP', () => {
  const dir = mkdtempSync(join(tmpdir(), 'credgate-policy-cli-'));
  const broken = join(dir, 'broken.yaml');
  let dev: DevAuthorizationServer;
  before(async () => {
    writeFileSync(broken, 'rules:\n  - name: a\n    match: { method: FETCH!, path: /x }\n');
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT] });
  });
  after(async () => {
    await dev?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('check: a valid file exits 0 with a summary; an invalid one exits 2 and says where', async () => {
    const ok = await cli(['policy', 'check', 'deploy/policies/git.yaml'], {});
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /valid, 3 rule\(s\), default deny \(HTTP\), mailDefault deny\n$/, 'it names no audience: its rules use CREDGATE_AUDIENCE');
    assert.equal(ok.stderr, '', 'nothing to warn about');
    // A policy whose default allows HTTP says mail is not covered by it.
    const httpOnly = join(dir, 'http-only.yaml');
    writeFileSync(httpOnly, 'default: allow\nrules:\n  - name: web\n    match: { path: "/**" }\n');
    const warned = await cli(['policy', 'check', httpOnly], {});
    assert.equal(warned.code, 0);
    assert.match(warned.stderr, /warning: default applies to HTTP only/);
    const explained = await cli(['policy', 'explain', '--file', httpOnly, '--protocol', 'smtp'], {});
    assert.equal(explained.code, 1, 'an HTTP default never decides a mail login');
    const bad = await cli(['policy', 'check', broken], {});
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /rules\[0\]\.match\.method: must be an HTTP method/);
  });

  test('explain: prints the deciding rule and what it needs; exit 1 when the policy denies', async () => {
    const push = await cli(['policy', 'explain', '--method', 'POST', '--uri', '/team/r.git/git-receive-pack'], { CREDGATE_POLICY_FILE: 'deploy/policies/git.yaml' });
    assert.equal(push.code, 0, push.stderr);
    assert.match(push.stdout, /rule: +git-push \(rule 2 of 3\)/);
    assert.match(push.stdout, /scopes: +write:repo/);
    const denied = await cli(['policy', 'explain', '--file', 'deploy/policies/git.yaml', '--method', 'DELETE', '--uri', '/r.git'], {});
    assert.equal(denied.code, 1);
    assert.match(denied.stdout, /effect: +deny \(no rule matches and the policy has no default\)/);
    const imap = await cli(['policy', 'explain', '--file', 'deploy/policies/mail.yaml', '--protocol', 'imap'], {});
    assert.match(imap.stdout, /rule: +imap .*\n[\s\S]*scopes: +read:mail/);
    const noFile = await cli(['policy', 'explain', '--uri', '/'], {});
    assert.equal(noFile.code, 2);
    assert.match(noFile.stderr, /no policy file/);
  });

  test('serve refuses to start with an invalid policy file, naming it', async () => {
    const result = await cli(['dev'], { CREDGATE_POLICY_FILE: broken, PORT: '0', HOST: '127.0.0.1' });
    assert.equal(result.code, 2);
    assert.match(result.stderr, /policy file .*broken\.yaml is invalid/);
  });

  test('SIGHUP reloads the policy; a broken file is refused and the old policy keeps answering', { timeout: 30_000 }, async () => {
    const policyFile = join(dir, 'live.yaml');
    copyFileSync('deploy/policies/git.yaml', policyFile);
    // Dev mode: the simplest real server, with the policy file.
    const child = spawn(process.execPath, [CLI, 'dev'], { env: { PATH: process.env.PATH!, HOST: '127.0.0.1', PORT: '0', CREDGATE_POLICY_FILE: policyFile, CREDGATE_AUDIENCE: AUDIENCE }, stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c));
      child.stderr.on('data', (c: Buffer) => (out += c));
      const waitFor = async (pattern: RegExp) => {
        const deadline = Date.now() + 10_000;
        while (!pattern.test(out)) {
          if (Date.now() > deadline) assert.fail(`no ${pattern} in:\n${out}`);
          await sleep(50);
        }
        return pattern.exec(out)!;
      };
      const url = (await waitFor(/credgate: +(http:\/\/127\.0\.0\.1:\d+)/))[1]!;
      const alice = 'Basic ' + Buffer.from('alice:correct horse battery staple').toString('base64');
      const ask = (uri: string) => fetch(`${url}/auth`, { headers: { authorization: alice, 'x-original-method': 'GET', 'x-original-uri': uri } }).then((r) => r.status);
      assert.equal(await ask('/r.git/info/refs?service=git-upload-pack'), 200);
      assert.equal(await ask('/elsewhere'), 403);

      child.kill('SIGHUP');
      await waitFor(/SIGHUP[^\n]*policy unchanged|policy unchanged[^\n]*SIGHUP/);
      writeFileSync(policyFile, 'rules: [');
      child.kill('SIGHUP');
      await waitFor(/SIGHUP[^\n]*policy reload refused|policy reload refused[^\n]*SIGHUP/);
      assert.equal(await ask('/r.git/info/refs?service=git-upload-pack'), 200, 'the old policy still answers');
      assert.equal(await ask('/elsewhere'), 403);

      writeFileSync(policyFile, 'default: allow\n');
      child.kill('SIGHUP');
      await waitFor(/policy reloaded/);
      assert.equal(await ask('/elsewhere'), 200);
    } finally {
      const exited = new Promise((resolve) => child.on('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
  });
});
