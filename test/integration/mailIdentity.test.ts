/**
 * Which account a backend is told logged in, whatever the client typed: real nginx mail proxy, real
 * Dovecot (IMAP, and submission for SMTP) from deploy/mail/, real nginx auth_request for HTTP, and
 * credgate against its dev authorization server holding accounts whose names look alike but are
 * distinct (`jos\u00e9` and `jose\u0301`; `alice`, full-width `ａｌｉｃｅ` and `al\u0131ce` with a dotless ı).
 * Every account's mailbox holds one message naming its owner: a login that lands anywhere shows it.
 *
 * The property: the account the backend logs in as (nginx's `Auth-User`, then Dovecot's
 * `user=<…>`) and the identity an HTTP upstream gets (`X-Auth-User`, `/v1/verify`'s `username`) are
 * the AS's name for the credential's owner. A client picks only whether it gets in at all.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { basicHeader, startCredgate, type TestCredgate } from '../fixtures/credgate.js';
import { startRawEchoApp, type RawEchoApp } from '../fixtures/headerAliases.js';
import { MailSession } from '../fixtures/mailClients.js';
import { DOVECOT_SUBMISSION, startDovecot, startNginxMail, startSmtpSink, type RunningDovecot, type RunningNginxMail, type RunningSmtpSink } from '../fixtures/mailServers.js';
import { NGINX_DEPLOY_DIR, startNginx, type RunningNginx } from '../fixtures/nginx.js';

const AUDIENCE = 'https://mail.example.com';
const CLIENT = { clientId: 'credgate-mail-identity-test', clientSecret: 'mail-identity-client-secret' };
const BACKEND_SECRET = 'identity-backend-secret-3b8e61d0c2f7a9';
const MAIL_SCOPES = ['read:mail', 'send:mail'];
const WAIT = 1;

/** Distinct accounts at the AS. The dev AS finds logins by `toLowerCase()`, so an ASCII case pair (`Alice`/`alice`) cannot be two accounts there. */
const ACCOUNTS = {
  alice: { username: 'alice', email: 'alice@example.com', password: 'alice-password-7f3a2c', sub: 'auth0|alice' },
  mallory: { username: 'mallory', email: 'mallory@example.com', password: 'mallory-password-91be0d', sub: 'auth0|mallory' },
  /** NFC: U+00E9. */
  joseNfc: { username: 'jos\u00e9', email: 'jose.nfc@example.com', password: 'jose-nfc-password-4d1e', sub: 'auth0|jose-nfc' },
  /** NFD: e + U+0301 COMBINING ACUTE ACCENT; renders the same. */
  joseNfd: { username: 'jose\u0301', email: 'jose.nfd@example.com', password: 'jose-nfd-password-8a6b', sub: 'auth0|jose-nfd' },
  /** Full-width letters (U+FF41…): NFKC folds them to `alice`. */
  aliceWide: { username: '\uff41\uff4c\uff49\uff43\uff45', email: 'alice.wide@example.com', password: 'alice-wide-password-c3', sub: 'auth0|alice-wide' },
  /** U+0131 LATIN SMALL LETTER DOTLESS I: upper-cases to ASCII `I`, so `ALICE` is an upper-case form of it too. */
  aliceDotless: { username: 'al\u0131ce', email: 'alice.dotless@example.com', password: 'alice-dotless-password-5e', sub: 'auth0|alice-dotless' },
} as const;
type Account = keyof typeof ACCOUNTS;

/** What the client sends as the password: the account's password, an ASP, or a JWT access token (with or without a `username` claim). */
type Secret = 'password' | 'ASP' | 'JWT' | 'JWT without username claim';

interface Login {
  /** The username the client types. */
  readonly typed: string;
  /** Whose credential the password is. */
  readonly owner: Account;
  readonly secret: Secret;
}
interface Allowed extends Login {
  /** The account whose mailbox (and identity) it must get. */
  readonly lands: Account;
}
/** A login that must get in, and beside it one that must not. */
interface Pair {
  readonly what: string;
  readonly allow: Allowed;
  readonly deny: Login;
  /** When `deny` is good for HTTP (a JWT without a username claim sent as a token): what HTTP must refuse instead. */
  readonly httpDeny?: Login;
}

const login = (typed: string, owner: Account, secret: Secret): Login => ({ typed, owner, secret });
const allowed = (typed: string, owner: Account, secret: Secret): Allowed => ({ typed, owner, secret, lands: owner });

/** A name as test output shows it: non-ASCII as \\u escapes (`jos\\u00e9`, `jose\\u0301` look alike otherwise). */
const shown = (name: string) => JSON.stringify(name).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
const describeLogin = (l: Login) => `${shown(l.typed)} + ${l.owner}'s ${l.secret}`;
const subjectOf = (account: Account) => `Mailbox of ${ACCOUNTS[account].sub}`;

const PAIRS: readonly Pair[] = [
  { what: 'the password', allow: allowed('alice', 'alice', 'password'), deny: login('alice', 'mallory', 'password') },
  { what: 'an ASP', allow: allowed('alice', 'alice', 'ASP'), deny: login('alice', 'mallory', 'ASP') },
  { what: 'a JWT as the password of its own username', allow: allowed('alice', 'alice', 'JWT'), deny: login('mallory', 'alice', 'JWT') },
  { what: 'x-access-token + an ASP: the ASP names the account', allow: allowed('x-access-token', 'alice', 'ASP'), deny: login('x-access-token', 'alice', 'password') },
  { what: "x-access-token + another account's ASP lands in that account", allow: allowed('x-access-token', 'mallory', 'ASP'), deny: login('alice', 'mallory', 'ASP') },
  { what: 'oauth2 + a JWT with a username claim', allow: allowed('oauth2', 'alice', 'JWT'), deny: login('oauth2', 'alice', 'JWT without username claim'), httpDeny: login('alice', 'alice', 'JWT without username claim') },
  { what: 'x-access-token + a JWT with a username claim', allow: allowed('x-access-token', 'joseNfd', 'JWT'), deny: login('x-access-token', 'joseNfd', 'JWT without username claim'), httpDeny: login('jose\u0301', 'joseNfd', 'JWT without username claim') },
  { what: 'ASCII case of the own name + own ASP', allow: allowed('ALICE', 'alice', 'ASP'), deny: login('ALICE', 'aliceDotless', 'ASP') },
  { what: "NFC jos\u00e9 + own ASP; NFC spelling + the NFD account's ASP (the reported attack)", allow: allowed('jos\u00e9', 'joseNfc', 'ASP'), deny: login('jos\u00e9', 'joseNfd', 'ASP') },
  { what: "NFD jose\u0301 + own ASP; NFD spelling + the NFC account's ASP", allow: allowed('jose\u0301', 'joseNfd', 'ASP'), deny: login('jose\u0301', 'joseNfc', 'ASP') },
  { what: "NFC jos\u00e9 + own password; + the NFD account's password", allow: allowed('jos\u00e9', 'joseNfc', 'password'), deny: login('jos\u00e9', 'joseNfd', 'password') },
  { what: "NFD jose\u0301 + own password; + the NFC account's password", allow: allowed('jose\u0301', 'joseNfd', 'password'), deny: login('jose\u0301', 'joseNfc', 'password') },
  { what: 'ASCII case folds (JOSE\u0301 + own ASP); non-ASCII case does not (JOS\u00c9 + own ASP)', allow: allowed('JOSE\u0301', 'joseNfd', 'ASP'), deny: login('JOS\u00c9', 'joseNfc', 'ASP') },
  { what: "full-width \uff41\uff4c\uff49\uff43\uff45 + own ASP; + alice's ASP", allow: allowed('\uff41\uff4c\uff49\uff43\uff45', 'aliceWide', 'ASP'), deny: login('\uff41\uff4c\uff49\uff43\uff45', 'alice', 'ASP') },
  { what: "alice + own ASP; alice + the full-width account's ASP", allow: allowed('alice', 'alice', 'ASP'), deny: login('alice', 'aliceWide', 'ASP') },
  { what: "al\u0131ce + own ASP; alice + al\u0131ce's ASP", allow: allowed('al\u0131ce', 'aliceDotless', 'ASP'), deny: login('alice', 'aliceDotless', 'ASP') },
  { what: "al\u0131ce + own password; al\u0131ce + alice's ASP", allow: allowed('al\u0131ce', 'aliceDotless', 'password'), deny: login('al\u0131ce', 'alice', 'ASP') },
  { what: "full-width + own password; full-width + alice's password", allow: allowed('\uff41\uff4c\uff49\uff43\uff45', 'aliceWide', 'password'), deny: login('\uff41\uff4c\uff49\uff43\uff45', 'alice', 'password') },
  { what: 'a zero-width space is not part of the name', allow: allowed('alice', 'alice', 'JWT'), deny: login('alice\u200b', 'alice', 'ASP') },
  { what: 'a trailing space is not the name', allow: allowed('x-access-token', 'alice', 'JWT'), deny: login('alice ', 'alice', 'ASP') },
];

/**
 * Logins the AS accepts under a spelling of the account that is not its username: the password
 * grant reports the name as typed when the AS's access token has no username claim (the dev AS's
 * JWTs have none, nor have Auth0's), so the backend gets that spelling rather than the AS's name.
 */
const SPELLED: readonly (Allowed & { why: string })[] = [
  { ...allowed('alice@example.com', 'alice', 'password'), why: 'the e-mail alias' },
  { ...allowed('JOS\u00c9', 'joseNfc', 'password'), why: 'non-ASCII upper case (the dev AS lower-cases logins with toLowerCase)' },
  { ...allowed('ALICE', 'alice', 'password'), why: 'ASCII upper case' },
];
const SPELLED_DENIED: readonly Login[] = [login('alice@example.com', 'alice', 'ASP'), login('JOS\u00c9', 'joseNfc', 'ASP'), login('JOSE\u0301', 'joseNfc', 'password'), login('ALICE', 'mallory', 'password')];

async function secretOf(dev: DevAuthorizationServer, l: Login): Promise<string> {
  const account = ACCOUNTS[l.owner];
  switch (l.secret) {
    case 'password':
      return account.password;
    case 'ASP':
      return dev.createAppPassword(account.username, { scope: MAIL_SCOPES.join(' ') }).password;
    case 'JWT':
      return dev.issueAccessToken(account.username, { extraClaims: { username: account.username } });
    case 'JWT without username claim':
      return dev.issueAccessToken(account.username);
  }
}

function startAs(): Promise<DevAuthorizationServer> {
  return startDevServer({
    audience: AUDIENCE,
    users: Object.values(ACCOUNTS).map((a) => ({ ...a, permissions: [...MAIL_SCOPES] })),
    clients: [CLIENT],
  });
}

/** Dovecot's `Login: user=<…>` names for one service, in order. */
async function dovecotLogins(dovecot: RunningDovecot, service: 'imap' | 'submission'): Promise<string[]> {
  return [...(await dovecot.log()).matchAll(new RegExp(`${service}-login: Info: Login: user=<([^>]*)>`, 'g'))].map((m) => m[1]!);
}

/** Waits (bounded) until Dovecot has logged more than `count` logins for `service`; returns the new ones. */
async function newLogins(dovecot: RunningDovecot, service: 'imap' | 'submission', count: number): Promise<string[]> {
  const deadline = Date.now() + 3000;
  for (;;) {
    const logins = await dovecotLogins(dovecot, service);
    if (logins.length > count || Date.now() > deadline) return logins.slice(count);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface ImapOutcome {
  readonly ok: boolean;
  /** The server's answer to the login. */
  readonly answer: string;
  /** Subjects of every message in the INBOX it landed in. */
  readonly subjects: readonly string[];
  readonly ms: number;
}

/** One IMAP session through nginx: log in (LOGIN with literals, or AUTHENTICATE PLAIN), then list the INBOX's subjects. */
async function imapSession(port: number, typed: string, secret: string, mechanism: 'LOGIN' | 'PLAIN'): Promise<ImapOutcome> {
  const session = await MailSession.open(port, /^\* OK/);
  try {
    const answer = mechanism === 'LOGIN' ? await session.imapLogin(typed, secret) : await session.imapAuthenticatePlain(typed, secret);
    if (!/^t1 OK /m.test(answer.text)) return { ok: false, answer: answer.text, subjects: [], ms: answer.ms };
    const select = await session.imap('SELECT INBOX');
    assert.match(select.text, /^t2 OK /m, `SELECT INBOX: ${select.text}`);
    const exists = Number(/^\* (\d+) EXISTS/m.exec(select.text)?.[1] ?? 0);
    let subjects: string[] = [];
    if (exists > 0) {
      const fetched = await session.imap('FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])');
      assert.match(fetched.text, /^t3 OK /m);
      subjects = [...fetched.text.matchAll(/^Subject: (.*)\r$/gm)].map((m) => m[1]!);
      assert.equal(subjects.length, exists);
    }
    await session.imap('LOGOUT');
    return { ok: true, answer: answer.text, subjects, ms: answer.ms };
  } finally {
    session.close();
  }
}

interface SmtpOutcome {
  readonly ok: boolean;
  readonly answer: string;
}

/** One SMTP session through nginx: AUTH PLAIN, then (if accepted) one message whose Subject is `subject`. */
async function smtpSession(port: number, typed: string, secret: string, subject: string): Promise<SmtpOutcome> {
  const session = await MailSession.open(port, /^220 /);
  try {
    await session.send('EHLO client.example', /^250 /m);
    const auth = await session.smtpAuthPlain(typed, secret);
    if (!/^235 /m.test(auth.text)) return { ok: false, answer: auth.text };
    assert.match((await session.send('MAIL FROM:<sender@example.org>', /^\d{3} /m)).text, /^250 /m);
    assert.match((await session.send('RCPT TO:<someone@example.net>', /^\d{3} /m)).text, /^250 /m);
    assert.match((await session.send('DATA', /^\d{3} /m)).text, /^354 /m);
    assert.match((await session.send(`Subject: ${subject}\r\n\r\nHello.\r\n.`, /^\d{3} /m)).text, /^250 /m);
    await session.send('QUIT', /^221 /m);
    return { ok: true, answer: auth.text };
  } finally {
    session.close();
  }
}

const root = process.getuid?.() === 0;
const NEEDS_ROOT = 'needs root: Dovecot runs as root and stores mail as nobody';

describe('the account a mail backend logs in as is the AS name of the credential owner (nginx mail proxy, Dovecot)', { skip: root ? false : NEEDS_ROOT, timeout: 300_000 }, () => {
  let dir: string;
  let dev: DevAuthorizationServer;
  let credgate: TestCredgate;
  let dovecot: RunningDovecot;
  let imap: RunningNginxMail;
  let smtp: RunningNginxMail | undefined;
  let relay: RunningSmtpSink | undefined;
  let echo: RawEchoApp;
  let http: RunningNginx;
  const submission = existsSync(DOVECOT_SUBMISSION);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'credgate-mail-identity-'));
    const policy = join(dir, 'policy.yaml');
    await writeFile(
      policy,
      [
        'rules:',
        '  - { name: imap, match: { protocol: imap }, scopes: [read:mail] }',
        '  - { name: smtp, match: { protocol: smtp }, scopes: [send:mail] }',
        'default: allow',
        '',
      ].join('\n'),
    );
    dev = await startAs();
    relay = submission ? await startSmtpSink() : undefined;
    // Names with non-ASCII letters need auth_username_chars widened (deploy/mail/README.md).
    dovecot = await startDovecot({ backendSecret: BACKEND_SECRET, proxyNets: '127.0.0.1/32', usernameChars: '', submission: relay && { relayPort: relay.port } });
    credgate = await startCredgate({
      issuer: dev.issuer,
      audience: AUDIENCE,
      ...CLIENT,
      mailImapBackend: `127.0.0.1:${dovecot.port}`,
      ...(dovecot.submissionPort === undefined ? {} : { mailSmtpBackend: `127.0.0.1:${dovecot.submissionPort}` }),
      mailBackendPassword: BACKEND_SECRET,
      trustedProxies: ['127.0.0.1'],
      mailWaitSeconds: WAIT,
      policyFile: policy,
    });
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
    const authHttp = `${new URL(credgate.url).host}/auth/mail`;
    imap = await startNginxMail({ authHttp, protocol: 'imap' });
    // Dovecot's submission service wants AUTH: nginx logs in with Auth-User and Auth-Pass after XCLIENT.
    smtp = submission ? await startNginxMail({ authHttp, protocol: 'smtp', proxySmtpAuth: true }) : undefined;
    echo = await startRawEchoApp();
    http = await startNginx(join(dir, 'nginx-http'), {
      http: [`include ${join(NGINX_DEPLOY_DIR, 'credgate-http.conf')};`, `upstream credgate { server ${new URL(credgate.url).host}; }`, `upstream app { server 127.0.0.1:${echo.port}; }`].join('\n'),
      server: [`include ${join(NGINX_DEPLOY_DIR, 'credgate-auth.conf')};`, 'location ^~ /app/ {', `  include ${join(NGINX_DEPLOY_DIR, 'protected-app.conf')};`, '  proxy_pass http://app;', '}'].join('\n'),
    });
    for (const account of Object.keys(ACCOUNTS) as Account[]) {
      await dovecot.deliver(ACCOUNTS[account].username, `From: postmaster@example.com\nTo: ${ACCOUNTS[account].email}\nSubject: ${subjectOf(account)}\n\nOnly ${account} may read this.\n`);
    }
  });

  after(async () => {
    await http?.stop();
    await echo?.close();
    await smtp?.close();
    await imap?.close();
    await dovecot?.close();
    await relay?.close();
    await credgate?.close();
    await dev?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** An allowed IMAP login: in, its own INBOX only, Dovecot logged exactly one login, as `expectedUser`. */
  const assertLandsIn = async (l: Login, lands: Account, mechanism: 'LOGIN' | 'PLAIN', expectedUser = ACCOUNTS[lands].username) => {
    const before = (await dovecotLogins(dovecot, 'imap')).length;
    const outcome = await imapSession(imap.port, l.typed, await secretOf(dev, l), mechanism);
    assert.ok(outcome.ok, `${describeLogin(l)} (${mechanism}) was refused: ${outcome.answer}`);
    assert.deepEqual(outcome.subjects, [subjectOf(lands)], `${describeLogin(l)} (${mechanism}) must see ${lands}'s INBOX and nothing else`);
    assert.deepEqual(await newLogins(dovecot, 'imap', before), [expectedUser], `${describeLogin(l)}: Dovecot's user`);
  };
  const assertRefused = async (l: Login, mechanism: 'LOGIN' | 'PLAIN') => {
    const before = (await dovecotLogins(dovecot, 'imap')).length;
    const outcome = await imapSession(imap.port, l.typed, await secretOf(dev, l), mechanism);
    assert.ok(!outcome.ok, `${describeLogin(l)} (${mechanism}) got in and saw ${JSON.stringify(outcome.subjects)}`);
    assert.match(outcome.answer, /^t1 NO \[AUTHENTICATIONFAILED\] Invalid login or password/m);
    assert.ok(outcome.ms >= WAIT * 1000 - 50, 'after Auth-Wait');
    assert.equal((await dovecotLogins(dovecot, 'imap')).length, before, 'Dovecot never saw it');
  };

  let seen = 0;
  /** GET through nginx's auth_request (deploy/nginx): status, and X-Auth-User/X-Auth-Subject as the application received them. */
  const throughNginx = async (l: Login) => {
    const response = await fetch(`${http.url}/app/inbox`, { headers: { authorization: basicHeader(l.typed, await secretOf(dev, l)) } });
    await response.arrayBuffer();
    const arrived = echo.received.slice(seen);
    seen = echo.received.length;
    const header = (name: string) => arrived[0]?.headers.find(([n]) => n.toLowerCase() === name)?.[1];
    const user = header('x-auth-user');
    return { status: response.status, requests: arrived.length, user: user === undefined ? undefined : decodeURIComponent(user), subject: header('x-auth-subject') };
  };
  const assertIdentity = async (l: Allowed) => {
    const account = ACCOUNTS[l.lands];
    const viaNginx = await throughNginx(l);
    assert.equal(viaNginx.status, 200, `${describeLogin(l)} through nginx`);
    assert.equal(viaNginx.requests, 1);
    assert.equal(viaNginx.user, account.username, `${describeLogin(l)}: X-Auth-User`);
    assert.equal(viaNginx.subject, account.sub, `${describeLogin(l)}: X-Auth-Subject`);
    const verified = await credgate.verify({ username: l.typed, password: await secretOf(dev, l) });
    assert.equal(verified.body.allow, true, `${describeLogin(l)}: /v1/verify ${JSON.stringify(verified.body)}`);
    assert.equal(verified.body.username, account.username, `${describeLogin(l)}: /v1/verify username`);
    assert.equal(verified.body.subject, account.sub);
  };
  const assertDenied = async (l: Login) => {
    const viaNginx = await throughNginx(l);
    assert.equal(viaNginx.status, 401, `${describeLogin(l)} through nginx`);
    assert.equal(viaNginx.requests, 0, 'the application never saw it');
    const verified = await credgate.verify({ username: l.typed, password: await secretOf(dev, l) });
    assert.equal(verified.body.allow, false, `${describeLogin(l)}: /v1/verify`);
    assert.equal(verified.body.username, undefined);
  };

  /** What nginx would be told for this login (`GET /auth/mail` from a trusted address): Auth-Status and Auth-User as UTF-8. */
  const authMail = async (l: Login, protocol: 'imap' | 'smtp') => {
    const response = await fetch(`${credgate.url}/auth/mail`, {
      headers: {
        'auth-method': 'plain',
        'auth-user': encodeURIComponent(l.typed),
        'auth-pass': encodeURIComponent(await secretOf(dev, l)),
        'auth-protocol': protocol,
        'auth-login-attempt': '1',
        'client-ip': '192.0.2.10',
      },
    });
    await response.arrayBuffer();
    const user = response.headers.get('auth-user');
    // credgate sends the name's UTF-8 bytes as they are (nginx copies them into its backend login).
    return { status: response.headers.get('auth-status'), user: user === null ? undefined : Buffer.from(user, 'latin1').toString('utf8') };
  };

  PAIRS.forEach((pair, i) => {
    test(`IMAP ${i + 1}: ${pair.what} — ${describeLogin(pair.allow)} lands in ${pair.allow.lands}'s INBOX; ${describeLogin(pair.deny)} is refused`, async () => {
      await assertLandsIn(pair.allow, pair.allow.lands, 'LOGIN');
      await assertLandsIn(pair.allow, pair.allow.lands, 'PLAIN');
      await assertRefused(pair.deny, i % 2 === 0 ? 'LOGIN' : 'PLAIN');
    });
  });

  test('IMAP: a spelling the AS accepts with the password never reaches another account; refused with an ASP', async () => {
    for (const l of SPELLED) {
      const outcome = await imapSession(imap.port, l.typed, await secretOf(dev, l), 'LOGIN');
      assert.ok(outcome.ok, `${describeLogin(l)}: ${outcome.answer}`);
      for (const other of Object.keys(ACCOUNTS) as Account[]) {
        if (other !== l.lands) assert.ok(!outcome.subjects.includes(subjectOf(other)), `${describeLogin(l)} reached ${other}'s INBOX`);
      }
    }
    for (const l of SPELLED_DENIED) await assertRefused(l, 'PLAIN');
  });

  test('/auth/mail: Auth-User is the AS name for every allowed login, IMAP and SMTP; a refused login gets no Auth-User', async () => {
    for (const pair of PAIRS) {
      for (const protocol of ['imap', 'smtp'] as const) {
        assert.deepEqual(await authMail(pair.allow, protocol), { status: 'OK', user: ACCOUNTS[pair.allow.lands].username }, `${describeLogin(pair.allow)} (${protocol})`);
        const refused = await authMail(pair.deny, protocol);
        assert.notEqual(refused.status, 'OK', `${describeLogin(pair.deny)} (${protocol})`);
        assert.equal(refused.user, undefined);
      }
    }
  });

  for (const l of SPELLED) {
    test(
      `${describeLogin(l)} (${l.why}): Auth-User, Dovecot's user, X-Auth-User and /v1/verify's username are ${shown(ACCOUNTS[l.lands].username)}, its INBOX is ${l.lands}'s`,
      async () => {
        for (const protocol of ['imap', 'smtp'] as const) assert.equal((await authMail(l, protocol)).user, ACCOUNTS[l.lands].username, `Auth-User (${protocol})`);
        await assertLandsIn(l, l.lands, 'LOGIN');
        await assertIdentity(l);
      },
    );
  }

  test('IMAP: neither Dovecot nor nginx ever logs a session as x-access-token or oauth2; nginx logs the typed name only for a refused login', async () => {
    const log = await dovecot.log();
    for (const typed of ['x-access-token', 'oauth2', 'JOSE\u0301']) assert.ok(!log.includes(`user=<${typed}>`), `Dovecot logged user=<${typed}>`);
    assert.match(log, /imap-login: Info: Login: user=<alice>/);
    // nginx replaces its login with Auth-User once credgate says OK.
    const nginxLog = await imap.errorLog();
    assert.match(nginxLog, /client login failed: .* login: "x-access-token"/);
    assert.ok(!/client logged in, .*login: "(x-access-token|oauth2)"/.test(nginxLog), 'nginx logged a session as the typed token username');
    assert.match(nginxLog, /client logged in, .*login: "mallory"/, 'x-access-token + mallory\'s ASP');
  });

  describe('SMTP through nginx to Dovecot submission', { skip: submission ? false : 'dovecot-submissiond is not installed (apt install dovecot-submissiond)' }, () => {
    let sent = 0;
    /** Sends one message; returns the Dovecot user that relayed it (from the queue id in its Received header and Dovecot's log). */
    const submitted = async (l: Login): Promise<{ ok: false; answer: string } | { ok: true; relayedAs: string; loggedInAs: string[] }> => {
      const subject = `identity check ${++sent} ${Date.now()}`;
      const before = (await dovecotLogins(dovecot, 'submission')).length;
      const outcome = await smtpSession(smtp!.port, l.typed, await secretOf(dev, l), subject);
      if (!outcome.ok) {
        assert.equal((await dovecotLogins(dovecot, 'submission')).length, before, 'Dovecot never saw it');
        return { ok: false, answer: outcome.answer };
      }
      const message = await relay!.waitFor((m) => m.data.includes(`Subject: ${subject}\r\n`));
      const id = /by backend\.test with ESMTPA\r\n\tid (\S+)/.exec(message.data)?.[1];
      assert.ok(id, `Dovecot's Received header: ${message.data}`);
      const loggedInAs = await newLogins(dovecot, 'submission', before);
      let relayedAs: string | undefined;
      const deadline = Date.now() + 3000;
      while (relayedAs === undefined && Date.now() < deadline) {
        relayedAs = new RegExp(`submission\\(([^)]*)\\)<\\d+><[^>]*>: Info: Successfully relayed message: .*, id=${id.replace(/[^\w]/g, '\\$&')},`).exec(await dovecot.log())?.[1];
        if (relayedAs === undefined) await new Promise((r) => setTimeout(r, 50));
      }
      assert.ok(relayedAs !== undefined, `Dovecot logged the relay of ${id}`);
      return { ok: true, relayedAs, loggedInAs };
    };

    const SMTP_PAIRS: readonly Pair[] = [
      { what: 'the password', allow: allowed('alice', 'alice', 'password'), deny: login('alice', 'mallory', 'password') },
      { what: 'x-access-token + an ASP', allow: allowed('x-access-token', 'joseNfc', 'ASP'), deny: login('x-access-token', 'alice', 'JWT without username claim') },
      { what: "the NFC name + own ASP; + the NFD account's ASP", allow: allowed('jos\u00e9', 'joseNfc', 'ASP'), deny: login('jos\u00e9', 'joseNfd', 'ASP') },
      { what: "the NFD name + own ASP; + the NFC account's ASP", allow: allowed('jose\u0301', 'joseNfd', 'ASP'), deny: login('jose\u0301', 'joseNfc', 'ASP') },
      { what: 'oauth2 + a JWT with a username claim', allow: allowed('oauth2', 'aliceWide', 'JWT'), deny: login('alice', 'aliceWide', 'JWT') },
      { what: 'ASCII case + own ASP', allow: allowed('ALICE', 'alice', 'ASP'), deny: login('ALICE', 'aliceDotless', 'ASP') },
    ];
    SMTP_PAIRS.forEach((pair, i) => {
      test(`SMTP ${i + 1}: ${pair.what} — ${describeLogin(pair.allow)} submits as ${pair.allow.lands}; ${describeLogin(pair.deny)} gets 535`, async () => {
        const ok = await submitted(pair.allow);
        assert.ok(ok.ok, `${describeLogin(pair.allow)}: ${ok.ok ? '' : ok.answer}`);
        assert.deepEqual(ok.loggedInAs, [ACCOUNTS[pair.allow.lands].username], "Dovecot's submission-login user");
        assert.equal(ok.relayedAs, ACCOUNTS[pair.allow.lands].username, 'the Dovecot session that relayed the message');
        const refused = await submitted(pair.deny);
        assert.ok(!refused.ok);
        assert.match(refused.answer, /^535 5\.7\.8 Invalid login or password/m);
      });
    });

    test('SMTP: Dovecot never logs the typed x-access-token or oauth2', async () => {
      const log = await dovecot.log();
      assert.match(log, /submission-login: Info: Login: user=<alice>/);
      for (const typed of ['x-access-token', 'oauth2', 'ALICE']) assert.ok(!log.includes(`user=<${typed}>`) && !log.includes(`submission(${typed})`), `Dovecot logged ${typed}`);
    });
  });

  describe('HTTP: the identity an upstream gets is the AS name of the credential owner', () => {
    PAIRS.forEach((pair, i) => {
      test(`HTTP ${i + 1}: ${describeLogin(pair.allow)} is ${pair.allow.lands} (X-Auth-User, /v1/verify); ${describeLogin(pair.httpDeny ?? pair.deny)} is refused`, async () => {
        await assertIdentity(pair.allow);
        await assertDenied(pair.httpDeny ?? pair.deny);
      });
    });

    test('HTTP: a JWT without a username claim is allowed for HTTP with its subject and no X-Auth-User (mail refuses it)', async () => {
      const viaNginx = await throughNginx(login('x-access-token', 'mallory', 'JWT without username claim'));
      assert.equal(viaNginx.status, 200);
      assert.equal(viaNginx.user, undefined);
      assert.equal(viaNginx.subject, ACCOUNTS.mallory.sub);
      await assertDenied(login('alice', 'mallory', 'JWT without username claim'));
    });

    test('HTTP: a spelling the AS accepts with the password names the right subject; with an ASP it is refused', async () => {
      for (const l of SPELLED) {
        const viaNginx = await throughNginx(l);
        assert.equal(viaNginx.status, 200);
        assert.equal(viaNginx.subject, ACCOUNTS[l.lands].sub, `${describeLogin(l)}: X-Auth-Subject`);
      }
      for (const l of SPELLED_DENIED) await assertDenied(l);
    });
  });
});

describe('what nginx hands an SMTP backend (a recording SMTP server as the backend)', { timeout: 60_000 }, () => {
  let dev: DevAuthorizationServer;
  let credgate: TestCredgate;
  let backend: RunningSmtpSink;
  let withAuth: RunningNginxMail;
  let withoutAuth: RunningNginxMail;

  before(async () => {
    dev = await startAs();
    backend = await startSmtpSink({ announce: true });
    credgate = await startCredgate({ issuer: dev.issuer, audience: AUDIENCE, ...CLIENT, mailSmtpBackend: `127.0.0.1:${backend.port}`, mailBackendPassword: BACKEND_SECRET, trustedProxies: ['127.0.0.1'], mailWaitSeconds: WAIT });
    dev.setResourceServerJwksUrl(credgate.jwksUrl);
    const authHttp = `${new URL(credgate.url).host}/auth/mail`;
    withAuth = await startNginxMail({ authHttp, protocol: 'smtp', proxySmtpAuth: true });
    withoutAuth = await startNginxMail({ authHttp, protocol: 'smtp' });
  });

  after(async () => {
    await withAuth?.close();
    await withoutAuth?.close();
    await backend?.close();
    await credgate?.close();
    await dev?.close();
  });

  const commandsFor = async (nginx: RunningNginxMail, l: Login) => {
    const before = backend.commands.length;
    const session = await MailSession.open(nginx.port, /^220 /);
    try {
      await session.send('EHLO client.example', /^250 /m);
      const auth = await session.smtpAuthPlain(l.typed, await secretOf(dev, l));
      if (/^235 /m.test(auth.text)) await session.send('MAIL FROM:<sender@example.org>', /^\d{3} /m);
      return { auth: auth.text, commands: backend.commands.slice(before) };
    } finally {
      session.close();
    }
  };
  const plainAuthcid = (commands: readonly string[]) => {
    const line = commands.find((c) => c.startsWith('AUTH PLAIN '));
    return line === undefined ? undefined : Buffer.from(line.slice('AUTH PLAIN '.length), 'base64').toString('utf8').split('\0');
  };

  test('proxy_smtp_auth on: AUTH PLAIN with the AS name and the backend secret, never the typed name or the client password', async () => {
    for (const l of [allowed('x-access-token', 'joseNfd', 'ASP'), allowed('ALICE', 'alice', 'ASP'), allowed('jos\u00e9', 'joseNfc', 'ASP')]) {
      const { auth, commands } = await commandsFor(withAuth, l);
      assert.match(auth, /^235 /m, describeLogin(l));
      assert.deepEqual(plainAuthcid(commands), ['', ACCOUNTS[l.lands].username, BACKEND_SECRET], `${describeLogin(l)}: ${JSON.stringify(commands)}`);
      assert.ok(!commands.some((c) => c.includes(l.typed) && l.typed !== ACCOUNTS[l.lands].username), 'the typed name is nowhere');
    }
    const refused = await commandsFor(withAuth, login('jos\u00e9', 'joseNfd', 'ASP'));
    assert.match(refused.auth, /^535 /m);
    assert.deepEqual(refused.commands, [], 'a refused login never reaches the backend');
  });

  test('proxy_smtp_auth off: XCLIENT LOGIN= is the AS name (UTF-8 as it is)', async () => {
    for (const l of [allowed('oauth2', 'alice', 'JWT'), allowed('JOSE\u0301', 'joseNfd', 'ASP')]) {
      const { auth, commands } = await commandsFor(withoutAuth, l);
      assert.match(auth, /^235 /m, describeLogin(l));
      const xclient = commands.find((c) => c.startsWith('XCLIENT '));
      assert.ok(xclient, JSON.stringify(commands));
      assert.equal(/ LOGIN=(\S+)/.exec(xclient)?.[1], ACCOUNTS[l.lands].username, `${describeLogin(l)}: ${xclient}`);
      assert.ok(!commands.some((c) => c.startsWith('AUTH')), 'no AUTH without proxy_smtp_auth');
    }
    const refused = await commandsFor(withoutAuth, login('x-access-token', 'alice', 'JWT without username claim'));
    assert.match(refused.auth, /^535 /m);
    assert.deepEqual(refused.commands, []);
  });
});
