/**
 * A policy written for HTTP (rules without `protocol`, `default: allow`) opens no mail: IMAP, POP3 and
 * SMTP logins through the real nginx mail proxy are refused, while the same credentials pass on
 * `/auth`. Only a rule naming the protocol, or `mailDefault`, lets a mail login in.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { basicHeader, startCredgate, type TestCredgate } from '../fixtures/credgate.js';
import { MailSession } from '../fixtures/mailClients.js';
import { startDovecot, startNginxMail, type RunningDovecot, type RunningNginxMail } from '../fixtures/mailServers.js';
import { generateClientKeys } from '../../src/upstream/clientKeys.js';

const AUDIENCE = 'https://mail.example.com';
const CLIENT = { clientId: 'credgate-mail-policy-test', clientSecret: 'mail-policy-client-secret' };
const BACKEND_SECRET = 'policy-backend-secret-0d4c7e9a1b25f3';
const users = Object.fromEntries(defaultDevUsers().map((u) => [u.username, u]));
const ALICE = users.alice!.password;
const WAIT = 1;
/** Written for a web application: no rule names a mail protocol. */
const HTTP_ONLY_POLICY = ['rules:', '  - name: admin', '    match: { path: /admin/** }', '    scopes: [write:repo]', 'default: allow', ''].join('\n');

const root = process.getuid?.() === 0;

describe('a policy with only HTTP rules and default: allow refuses every mail login', { skip: root ? false : 'needs root: Dovecot runs as root and stores mail as nobody', timeout: 120_000 }, () => {
  let dir: string;
  let dev: DevAuthorizationServer;
  let dovecot: RunningDovecot;
  /** The HTTP-only policy. */
  let httpOnly: TestCredgate;
  /** The same policy with `mailDefault: allow`. */
  let mailDefault: TestCredgate;
  const nginx: Record<string, RunningNginxMail> = {};

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'credgate-mail-policy-'));
    await writeFile(join(dir, 'http-only.yaml'), HTTP_ONLY_POLICY);
    await writeFile(join(dir, 'mail-default.yaml'), HTTP_ONLY_POLICY + 'mailDefault: allow\n');
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT] });
    dovecot = await startDovecot({ backendSecret: BACKEND_SECRET, proxyNets: '127.0.0.1/32' });
    const config = (policyFile: string) => ({
      issuer: dev.issuer,
      audience: AUDIENCE,
      ...CLIENT,
      mailImapBackend: `127.0.0.1:${dovecot.port}`,
      // Refusals never reach a backend (TEST-NET-1 addresses); IMAP's allow below does.
      mailPop3Backend: '192.0.2.1:110',
      mailSmtpBackend: '192.0.2.1:587',
      mailBackendPassword: BACKEND_SECRET,
      trustedProxies: ['127.0.0.1'],
      mailWaitSeconds: WAIT,
      policyFile,
    });
    // One client key for both credgates: the dev AS knows one JWKS URL.
    const shared = { keys: await generateClientKeys() };
    httpOnly = await startCredgate(config(join(dir, 'http-only.yaml')), shared);
    mailDefault = await startCredgate(config(join(dir, 'mail-default.yaml')), shared);
    dev.setResourceServerJwksUrl(httpOnly.jwksUrl);
    for (const protocol of ['imap', 'pop3', 'smtp'] as const) nginx[protocol] = await startNginxMail({ authHttp: `${new URL(httpOnly.url).host}/auth/mail`, protocol });
    nginx.imapMailDefault = await startNginxMail({ authHttp: `${new URL(mailDefault.url).host}/auth/mail`, protocol: 'imap' });
    await dovecot.deliver('alice', 'From: postmaster@example.com\nTo: alice@example.com\nSubject: Hello alice\n\nWelcome.\n');
  });

  after(async () => {
    for (const n of Object.values(nginx)) await n.close();
    await dovecot?.close();
    await httpOnly?.close();
    await mailDefault?.close();
    await dev?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const aliceOverHttp = (credgate: TestCredgate, password: string) =>
    fetch(`${credgate.url}/auth`, { headers: { authorization: basicHeader('alice', password), 'x-original-method': 'GET', 'x-original-uri': '/inbox', 'x-original-host': 'app.example.com' } });
  const mailDecisions = (credgate: TestCredgate, protocol: string) => credgate.logs.filter((l) => l.includes('"interface":"mail"') && l.includes(`"protocol":"${protocol}"`));

  test('IMAP through nginx: password, ASP and x-access-token + ASP are refused, Dovecot never asked; the same password passes /auth', async () => {
    const logins = (await dovecot.log()).match(/Login: user=/g)?.length ?? 0;
    const asp = dev.createAppPassword('alice').password;
    for (const [username, password] of [['alice', ALICE], ['alice', asp], ['x-access-token', asp]] as const) {
      const session = await MailSession.open(nginx.imap!.port, /^\* OK/);
      try {
        const answer = await session.imapLogin(username, password);
        assert.match(answer.text, /^t1 NO \[AUTHENTICATIONFAILED\] Invalid login or password/m, `${username}: ${answer.text}`);
        assert.ok(answer.ms >= WAIT * 1000 - 50, 'after Auth-Wait');
      } finally {
        session.close();
      }
    }
    assert.equal((await dovecot.log()).match(/Login: user=/g)?.length ?? 0, logins, 'Dovecot never saw a login');
    const decisions = mailDecisions(httpOnly, 'imap');
    assert.equal(decisions.length, 3);
    for (const line of decisions) {
      assert.match(line, /"result":"deny","reason":"denied_by_policy"/);
      assert.match(line, /no rule names this mail protocol and the policy has no mailDefault/);
    }
    const http = await aliceOverHttp(httpOnly, ALICE);
    assert.equal(http.status, 200, 'default: allow lets the same password through HTTP');
    assert.equal(http.headers.get('x-auth-user'), 'alice');
  });

  test('POP3 through nginx: refused with -ERR [AUTH]', async () => {
    const session = await MailSession.open(nginx.pop3!.port, /^\+OK/);
    try {
      await session.send('USER alice', /^\+OK/m);
      const refused = await session.send(`PASS ${ALICE}`, /^-ERR|^\+OK/m);
      assert.match(refused.text, /^-ERR \[AUTH\] Invalid login or password\r\n/);
    } finally {
      session.close();
    }
    assert.match(mailDecisions(httpOnly, 'pop3').join(''), /"reason":"denied_by_policy"/);
    assert.doesNotMatch(mailDecisions(httpOnly, 'pop3').join(''), /"result":"allow"/);
  });

  test('SMTP through nginx: refused with 535, no relaying under default: allow', async () => {
    const session = await MailSession.open(nginx.smtp!.port, /^220 /);
    try {
      await session.send('EHLO client.example', /^250 /m);
      assert.match((await session.smtpAuthPlain('alice', ALICE)).text, /^535 5\.7\.8 Invalid login or password\r\n/);
    } finally {
      session.close();
    }
    assert.match(mailDecisions(httpOnly, 'smtp').join(''), /"reason":"denied_by_policy"/);
    assert.doesNotMatch(mailDecisions(httpOnly, 'smtp').join(''), /"result":"allow"/);
  });

  test('the same policy with mailDefault: allow lets the IMAP login in (and a wrong password still out)', async () => {
    const session = await MailSession.open(nginx.imapMailDefault!.port, /^\* OK/);
    try {
      assert.match((await session.imapLogin('alice', ALICE)).text, /^t1 OK /m);
      const select = await session.imap('SELECT INBOX');
      assert.match(select.text, /^\* 1 EXISTS/m);
    } finally {
      session.close();
    }
    assert.match(await dovecot.log(), /imap-login: Info: Login: user=<alice>/);
    const wrong = await MailSession.open(nginx.imapMailDefault!.port, /^\* OK/);
    try {
      assert.match((await wrong.imapLogin('alice', 'not-alices-password')).text, /^t1 NO \[AUTHENTICATIONFAILED\]/m);
    } finally {
      wrong.close();
    }
  });
});
