/**
 * `/auth/mail` behind the real nginx mail proxy (Debian nginx + libnginx-mod-mail) in front of a real
 * Dovecot, both started from deploy/mail/, with credgate against its dev authorization server, and
 * real IMAP clients: curl, and a raw session where one connection must try several logins.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { startCredgate, type TestCredgate } from '../fixtures/credgate.js';
import { curlImap, MailSession, type CurlResult } from '../fixtures/mailClients.js';
import { startDovecot, startNginxMail, type RunningDovecot, type RunningNginxMail } from '../fixtures/mailServers.js';

const AUDIENCE = 'https://mail.example.com';
const CLIENT = { clientId: 'credgate-mail-test', clientSecret: 'dev-client-secret-value' };
const BACKEND_SECRET = 'dovecot-backend-secret-5f2c9a71e04b';
const users = Object.fromEntries(defaultDevUsers().map((u) => [u.username, u]));
const ALICE = users.alice!.password;
const BOB = users.bob!.password;
const CAROL = users.carol!.password;
/** `%` and `:` and non-ASCII: nginx percent-escapes some of it, passes the UTF-8 bytes of the rest. */
const juergen = { username: 'juergen', email: 'juergen@example.com', password: 'pä:ss%wörd:✓ 名 %41', sub: 'auth0|juergen01', permissions: ['read:mail'] };
const WAIT = 1;
/** The example policy: IMAP and POP3 need read:mail, SMTP send:mail. */
const MAIL_POLICY = fileURLToPath(new URL('../../../deploy/policies/mail.yaml', import.meta.url));

const root = process.getuid?.() === 0;

describe('IMAP through nginx mail proxy and Dovecot', { skip: root ? false : 'needs root: Dovecot runs as root and stores mail as nobody' }, () => {
  let dev: DevAuthorizationServer;
  let credgate: TestCredgate;
  let dovecot: RunningDovecot;
  let nginx: RunningNginxMail;

  before(async () => {
    dev = await startDevServer({ audience: AUDIENCE, users: [...defaultDevUsers(), juergen], clients: [CLIENT] });
    dovecot = await startDovecot({ backendSecret: BACKEND_SECRET, proxyNets: '127.0.0.1/32' });
    credgate = await startCredgate({
      issuer: dev.issuer,
      audience: AUDIENCE,
      ...CLIENT,
      mailImapBackend: `127.0.0.1:${dovecot.port}`,
      mailBackendPassword: BACKEND_SECRET,
      trustedProxies: ['127.0.0.1'],
      mailWaitSeconds: WAIT,
      mailMaxAttempts: 3,
      policyFile: MAIL_POLICY,
    });
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
    nginx = await startNginxMail({ authHttp: `${new URL(credgate.url).host}/auth/mail`, protocol: 'imap' });
    for (const name of ['alice', 'bob', 'juergen']) await dovecot.deliver(name, `From: postmaster@example.com\nTo: ${name}@example.com\nSubject: Hello ${name}\n\nWelcome.\n`);
  });

  after(async () => {
    await nginx?.close();
    await dovecot?.close();
    await credgate?.close();
    await dev?.close();
  });

  const assertIn = (result: CurlResult, name: string) => {
    assert.equal(result.code, 0, `curl failed: ${result.stderr}`);
    assert.match(result.stdout, new RegExp(`\\* 1 FETCH \\(ENVELOPE .*"Hello ${name}"`), 'INBOX selected and its message listed');
  };
  /** curl exit 67: CURLE_LOGIN_DENIED, the server said NO to the login. */
  const assertRefused = (result: CurlResult) => {
    assert.equal(result.code, 67, `expected a refused login, got ${result.code}: ${result.stderr}${result.stdout}`);
    assert.equal(result.stdout, '');
    assert.ok(result.ms >= WAIT * 1000 - 50, `nginx waited Auth-Wait (${WAIT} s) before saying no, took ${Math.round(result.ms)} ms`);
  };

  test('a password logs in through nginx (AUTHENTICATE PLAIN and LOGIN), selects INBOX and lists it', async () => {
    for (const mechanism of ['PLAIN', 'LOGIN'] as const) assertIn(await curlImap(nginx.port, 'alice', ALICE, mechanism), 'alice');
    assert.match(await dovecot.log(), /imap-login: Info: Login: user=<alice>/);
  });

  test('a wrong password is refused: the client sees an authentication error after Auth-Wait, Dovecot is never asked', async () => {
    const logins = (await dovecot.log()).match(/Login: user=<alice>/g)?.length ?? 0;
    const result = await curlImap(nginx.port, 'alice', 'not-alices-password');
    assertRefused(result);
    assert.ok(result.ms < WAIT * 1000 + 3000, 'and not much longer');
    assert.match(await nginx.errorLog(), /client login failed: "\[AUTHENTICATIONFAILED\] Invalid login or password"/);
    assert.equal((await dovecot.log()).match(/Login: user=<alice>/g)?.length ?? 0, logins);
  });

  test('an app-specific password with read:mail logs in; one with only read:repo is refused', async () => {
    assertIn(await curlImap(nginx.port, 'alice', dev.createAppPassword('alice', { scope: 'read:mail' }).password), 'alice');
    assertRefused(await curlImap(nginx.port, 'alice', dev.createAppPassword('alice', { scope: 'read:repo' }).password));
  });

  test('an MFA user gets in only with an app-specific password, never with the password alone', async () => {
    assertRefused(await curlImap(nginx.port, 'bob', BOB));
    assertIn(await curlImap(nginx.port, 'bob', dev.createAppPassword('bob', { scope: 'read:mail' }).password), 'bob');
  });

  test('a user without read:mail (the policy rule for imap) is refused with her correct password, the same way as a wrong one', async () => {
    assertRefused(await curlImap(nginx.port, 'carol', CAROL));
    const line = credgate.logs.find((l) => l.includes('"interface":"mail"') && l.includes('"username":"carol"'));
    assert.match(line ?? '', /"reason":"insufficient_scope"/);
    assert.match(line ?? '', /"rule":"imap"/);
  });

  test('a password with %, : and non-ASCII characters survives nginx percent-encoding (SASL PLAIN and the LOGIN command); one decoded too often is refused', async () => {
    assertIn(await curlImap(nginx.port, 'juergen', juergen.password, 'PLAIN'), 'juergen');
    assertRefused(await curlImap(nginx.port, 'juergen', juergen.password.replace('%41', 'A')));
    const session = await MailSession.open(nginx.port, /^\* OK/);
    try {
      assert.match((await session.imapLogin(juergen.username, juergen.password)).text, /^t1 OK /m);
      assert.match((await session.imap('SELECT INBOX')).text, /^\* 1 EXISTS/m);
    } finally {
      session.close();
    }
  });

  test('on one connection Auth-Wait doubles per failed attempt and nginx closes after mailMaxAttempts', async () => {
    const session = await MailSession.open(nginx.port, /^\* OK/);
    try {
      const first = await session.imap('LOGIN alice wrong-password-1');
      assert.match(first.text, /^t1 NO \[AUTHENTICATIONFAILED\] Invalid login or password/m);
      assert.ok(first.ms >= 1000 * WAIT - 50, `first wait ${Math.round(first.ms)} ms`);
      const second = await session.imap('LOGIN alice wrong-password-2');
      assert.match(second.text, /^t2 NO /m);
      assert.ok(second.ms >= 2000 * WAIT - 50, `second wait ${Math.round(second.ms)} ms`);
      const third = await session.imap('LOGIN alice wrong-password-3');
      assert.match(third.text, /^t3 NO /m);
      assert.ok(third.ms < 1000 * WAIT, `no wait on the last attempt: ${Math.round(third.ms)} ms`);
      await new Promise((r) => setTimeout(r, 200));
      assert.ok(session.closed, 'nginx closed the connection');
    } finally {
      session.close();
    }
  });

  test('on one connection (the LOGIN command) a right password after a wrong one logs in and selects INBOX', async () => {
    const session = await MailSession.open(nginx.port, /^\* OK/);
    try {
      assert.match((await session.imap('LOGIN alice wrong-password')).text, /^t1 NO /m);
      assert.match((await session.imap(`LOGIN alice "${ALICE}"`)).text, /^t2 OK /m);
      const select = await session.imap('SELECT INBOX');
      assert.match(select.text, /^\* 1 EXISTS/m);
      assert.match(select.text, /^t3 OK /m);
    } finally {
      session.close();
    }
  });

  test('no password or secret the clients used appears in credgate logs', () => {
    const logs = credgate.logs.join('');
    for (const secret of [ALICE, BOB, CAROL, juergen.password, BACKEND_SECRET, 'not-alices-password']) assert.ok(!logs.includes(secret), 'a secret leaked into the logs');
  });

  // Last: Dovecot slows down an address after a failed login, and every login here comes from 127.0.0.1.
  test('Dovecot stores no user password: the backend secret from nginx address logs in, the user password does not', async () => {
    const direct = await MailSession.open(dovecot.port, /^\* OK/);
    try {
      assert.match((await direct.imap(`LOGIN alice "${BACKEND_SECRET}"`)).text, /^t1 OK /m);
    } finally {
      direct.close();
    }
    const refused = await MailSession.open(dovecot.port, /^\* OK/);
    try {
      assert.match((await refused.imap(`LOGIN alice "${ALICE}"`)).text, /^t1 NO \[AUTHENTICATIONFAILED\]/m);
    } finally {
      refused.close();
    }
  });
});

describe('POP3 and SMTP refusals through nginx mail proxy', () => {
  let dev: DevAuthorizationServer;
  let credgate: TestCredgate;
  let pop3: RunningNginxMail;
  let smtp: RunningNginxMail;

  before(async () => {
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT] });
    // Refusals never reach a backend, so the backends need not exist (TEST-NET-1 addresses).
    // No policy file here: the scopes come from mailPop3Scopes/mailSmtpScopes.
    credgate = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, ...CLIENT, mailPop3Backend: '192.0.2.1:110', mailSmtpBackend: '192.0.2.1:587', mailWaitSeconds: WAIT });
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
    const authHttp = `${new URL(credgate.url).host}/auth/mail`;
    pop3 = await startNginxMail({ authHttp, protocol: 'pop3' });
    smtp = await startNginxMail({ authHttp, protocol: 'smtp' });
  });

  after(async () => {
    await pop3?.close();
    await smtp?.close();
    await credgate?.close();
    await dev?.close();
  });

  test('POP3: a wrong password gets -ERR [AUTH] after Auth-Wait', async () => {
    const session = await MailSession.open(pop3.port, /^\+OK/);
    try {
      await session.send('USER alice', /^\+OK/m);
      const refused = await session.send('PASS not-alices-password', /^-ERR/m);
      assert.match(refused.text, /^-ERR \[AUTH\] Invalid login or password\r\n/);
      assert.ok(refused.ms >= WAIT * 1000 - 50, `waited ${Math.round(refused.ms)} ms`);
    } finally {
      session.close();
    }
  });

  test('SMTP: a wrong password gets 535 5.7.8 after Auth-Wait; a user without send:mail gets the same', async () => {
    for (const [username, password] of [['alice', 'not-alices-password'], ['bob', dev.createAppPassword('bob', { scope: 'read:mail' }).password]] as const) {
      const session = await MailSession.open(smtp.port, /^220 /);
      try {
        await session.send('EHLO client.example', /^250 /m);
        const refused = await session.send(`AUTH PLAIN ${Buffer.from(`\0${username}\0${password}`).toString('base64')}`, /^\d{3} /m);
        assert.match(refused.text, /^535 5\.7\.8 Invalid login or password\r\n/);
        assert.ok(refused.ms >= WAIT * 1000 - 50, `waited ${Math.round(refused.ms)} ms`);
      } finally {
        session.close();
      }
    }
  });
});

describe('/auth/mail and per-IP throttling (nginx headers sent directly)', () => {
  let dev: DevAuthorizationServer;
  before(async () => {
    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT] });
  });
  after(() => dev?.close());

  const ask = (credgate: TestCredgate, username: string, password: string, clientIp: string) =>
    fetch(`${credgate.url}/auth/mail`, {
      headers: { 'auth-method': 'plain', 'auth-user': username, 'auth-pass': encodeURIComponent(password), 'auth-protocol': 'imap', 'auth-login-attempt': '1', 'client-ip': clientIp },
    });
  const withCredgate = async (config: Record<string, unknown>, body: (credgate: TestCredgate) => Promise<void>) => {
    const credgate = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, ...CLIENT, mailImapBackend: '127.0.0.1:143', throttleIpFailures: 2, ...config });
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
    try {
      await body(credgate);
    } finally {
      await credgate.close();
    }
  };

  test('from a trusted nginx, failures are counted per Client-IP: that IP is throttled with Auth-Wait ≥ retry-after, another IP is not', async () => {
    await withCredgate({ trustedProxies: ['127.0.0.1'], throttleBaseDelaySeconds: 20 }, async (credgate) => {
      for (const name of ['nobody-1', 'nobody-2']) assert.equal((await ask(credgate, name, 'wrong', '192.0.2.1')).headers.get('auth-wait'), '3');
      const throttled = await ask(credgate, 'alice', ALICE, '192.0.2.1');
      assert.equal(throttled.status, 401, 'nginx ignores the status; anything else sees a refusal');
      assert.equal(throttled.headers.get('auth-status'), '[AUTHENTICATIONFAILED] Invalid login or password');
      assert.ok(Number(throttled.headers.get('auth-wait')) >= 19, `Auth-Wait ${throttled.headers.get('auth-wait')}`);
      assert.equal((await ask(credgate, 'alice', ALICE, '192.0.2.2')).headers.get('auth-status'), 'OK');
    });
  });

  test('from an untrusted peer, Client-IP is ignored: failures under a forged Client-IP throttle no one', async () => {
    await withCredgate({}, async (credgate) => {
      for (const name of ['nobody-1', 'nobody-2', 'nobody-3']) await ask(credgate, name, 'wrong', '192.0.2.1');
      assert.equal((await ask(credgate, 'alice', ALICE, '192.0.2.1')).headers.get('auth-status'), 'OK');
      assert.ok(credgate.logs.some((line) => line.includes('"interface":"mail"') && line.includes('"clientIp":"127.0.0.1"')), 'the peer is logged as the client');
    });
  });

  test('with trustedProxies set, an untrusted peer is the end user: its failures across usernames throttle it, whatever Client-IP it sends (regression: /auth/mail skipped the per-IP cap)', async () => {
    await withCredgate({ trustedProxies: ['192.0.2.10'], throttleBaseDelaySeconds: 20 }, async (credgate) => {
      for (const [name, ip] of [['nobody-1', '192.0.2.1'], ['nobody-2', '192.0.2.2']]) await ask(credgate, name!, 'wrong', ip!);
      const grants = dev.stats().tokenRequests;
      const throttled = await ask(credgate, 'alice', ALICE, '192.0.2.3');
      assert.equal(throttled.headers.get('auth-status'), '[AUTHENTICATIONFAILED] Invalid login or password');
      assert.ok(Number(throttled.headers.get('auth-wait')) >= 19, `Auth-Wait ${throttled.headers.get('auth-wait')}`);
      assert.equal(dev.stats().tokenRequests, grants, 'the throttled login never reached the AS');
    });
  });
});
