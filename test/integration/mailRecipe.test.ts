/**
 * deploy/mail/README.md run as written: its shell steps, its Dovecot `local.conf` over Debian's stock
 * Dovecot configuration, its nginx `mail { }` block, its credgate settings and its check commands.
 * Only what must vary is replaced: addresses and ports (run-time loopback ports), the TLS
 * certificate (generated), the backend secret and the password curl would prompt for.
 *
 * The README's steps change /etc and /var (a `vmail` user, /var/vmail, Dovecot's files), so Dovecot
 * runs in a private mount namespace in which /etc and /var are overlays on temporary directories:
 * the host's own files never change, and everything is gone when Dovecot stops.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { startCredgate, type TestCredgate } from '../fixtures/credgate.js';
import { documentedBlock, substitute } from '../fixtures/recipeDocs.js';
import { DEPLOY_MAIL, DOVECOT_SUBMISSION, freePorts, NGINX_MAIL_MODULE, startSmtpSink, stop, waitForGreeting, type RunningSmtpSink } from '../fixtures/mailServers.js';

const MAIL_POLICY = fileURLToPath(new URL('../../../deploy/policies/mail.yaml', import.meta.url));
const AUDIENCE = 'https://mail.example.com';
const CLIENT = { clientId: 'credgate-mail-recipe-test', clientSecret: 'mail-recipe-client-secret' };
const BACKEND_SECRET = 'recipe-backend-secret-6a0f3e91c4d27b58';
const users = Object.fromEntries(defaultDevUsers().map((u) => [u.username, u]));
const ALICE = users.alice!.password;
/** An AS account that shares its name with a Unix user of the mail host. */
const UNIX_NAMED = { username: 'unixuser', email: 'unixuser@example.com', password: 'unixuser-password-42', sub: 'auth0|unixuser', permissions: ['read:mail', 'send:mail'] };

/** The README's block marked `<!-- recipe-test: name -->`, which must be a `lang` block. */
const block = (lang: string, name: string): string => {
  const found = documentedBlock('deploy/mail/README.md', name);
  assert.equal(found.lang, lang, `${found.where}: a ${lang || 'plain'} block`);
  return found.text;
};

/** Shell words of one command line (quotes, backslash-newline joins, `#` comments): enough for the README's curl lines. */
function shellWords(line: string): string[] {
  const words: string[] = [];
  let word: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === "'" || c === '"') {
      const end = line.indexOf(c, i + 1);
      word = (word ?? '') + line.slice(i + 1, end);
      i = end;
    } else if (/\s/.test(c)) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else if (c === '#' && word === undefined) break;
    else word = (word ?? '') + c;
  }
  if (word !== undefined) words.push(word);
  return words;
}
const commands = (sh: string) =>
  sh
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map(shellWords)
    .filter((w) => w.length > 0);

/** What the test needs of this host: root, unshare, overlayfs on the temporary directory, Dovecot's submission service. */
function namespaceProblem(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (mount namespace, Dovecot)';
  for (const db of ['passwd', 'group']) {
    if (spawnSync('getent', [db, 'vmail']).status === 0) return `this host already has a vmail ${db === 'passwd' ? 'user' : 'group'}: the README step that creates it is for a fresh system`;
  }
  if (spawnSync('getent', ['passwd', UNIX_NAMED.username]).status === 0) return `this host already has a user ${UNIX_NAMED.username}`;
  if (!statSync(DOVECOT_SUBMISSION, { throwIfNoEntry: false })) return 'dovecot-submissiond is not installed';
  const dir = mkdtempSync(join(tmpdir(), 'credgate-overlay-probe-'));
  try {
    for (const d of ['lower', 'upper', 'work', 'merged']) mkdirSync(join(dir, d));
    const probe = spawnSync('unshare', ['--mount', '--propagation', 'private', 'mount', '-t', 'overlay', 'overlay', '-o', `lowerdir=${dir}/lower,upperdir=${dir}/upper,workdir=${dir}/work`, `${dir}/merged`], { encoding: 'utf8' });
    return probe.status === 0 ? undefined : `cannot mount an overlay in a private mount namespace: ${probe.stderr.trim()}`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
const problem = namespaceProblem();

function curl(args: string[], options: { cwd: string; stdin?: string }): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile('curl', args, { cwd: options.cwd, encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? -1) : 0, stdout, stderr }),
    );
    child.stdin!.end(options.stdin ?? '');
  });
}

describe('deploy/mail/README.md as written, on Debian with stock Dovecot configuration', { skip: problem ?? false, timeout: 180_000 }, () => {
  let dir: string;
  let dev: DevAuthorizationServer;
  let credgate: TestCredgate;
  let relay: RunningSmtpSink;
  let dovecot: ChildProcess;
  let nginx: ChildProcess;
  /** README port → run-time port. */
  const ports = new Map<number, number>();
  let imapBackend: number;
  let submissionBackend: number;
  /** The mount namespace's view of the file system (Dovecot's /proc/PID/root). */
  const inside = (path: string) => `/proc/${dovecot.pid}/root${path}`;
  const dovecotLog = () => readFileSync(join(dir, 'dovecot.log'), 'utf8');

  /** A README curl command, pointed at this test's servers: mail.example.com:PORT resolved to 127.0.0.1, the test's certificate, the password from stdin. */
  const run = (words: string[], password?: string, extra: string[] = []) => {
    assert.equal(words[0], 'curl');
    const args: string[] = ['--max-time', '20', '--cacert', join(dir, 'mail.example.com.pem'), ...extra];
    for (const word of words.slice(1)) {
      const url = /^(imaps?|smtps?|pop3s?):\/\/mail\.example\.com(?::(\d+))?(\/.*)?$/.exec(word);
      if (url) {
        const readmePort = Number(url[2] ?? { imap: 143, imaps: 993, smtp: 25, smtps: 465, pop3: 110, pop3s: 995 }[url[1]!]);
        const port = ports.get(readmePort);
        assert.ok(port, `the README's nginx block listens on ${readmePort}`);
        args.push('--resolve', `mail.example.com:${port}:127.0.0.1`, `${url[1]}://mail.example.com:${port}${url[3] ?? ''}`);
      } else args.push(word.replace('http://127.0.0.1:8080/', `${credgate.url}/`));
    }
    // `-u alice` makes curl prompt; a later `user` from a config on stdin answers instead.
    if (password !== undefined) args.push('-K', '-');
    const user = words[words.indexOf('-u') + 1];
    return curl(args, { cwd: dir, stdin: password === undefined ? '' : `user = "${user}:${password}"\n` });
  };
  const check = commands(block('sh', 'mail-check'));
  const imapStarttls = check.find((w) => w.some((x) => x.startsWith('imap://')))!;
  const imaps = check.find((w) => w.some((x) => x.startsWith('imaps://')))!;
  const smtp = check.find((w) => w.some((x) => x.startsWith('smtp://')))!;
  const authMail = check.find((w) => w.some((x) => x.endsWith('/auth/mail')))!;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'credgate-mail-recipe-'));
    const openssl = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=mail.example.com', '-addext', 'subjectAltName=DNS:mail.example.com', '-keyout', join(dir, 'mail.example.com.key'), '-out', join(dir, 'mail.example.com.pem')], { encoding: 'utf8' });
    assert.equal(openssl.status, 0, `openssl req: ${openssl.stderr}`);
    writeFileSync(join(dir, 'message.txt'), 'Subject: recipe check\r\n\r\nSent by the README check command.\r\n');
    dev = await startDevServer({ audience: AUDIENCE, users: [...defaultDevUsers(), UNIX_NAMED], clients: [CLIENT] });
    relay = await startSmtpSink();

    // Dovecot: the README's shell steps and local.conf, over Debian's /etc/dovecot/dovecot.conf.
    const setup = block('sh', 'mail-dovecot-setup');
    const localConf = substitute(block('', 'mail-dovecot-local-conf'), [
      { kind: 'address', from: 'login_trusted_networks = 10.0.0.10 ', to: 'login_trusted_networks = 127.0.0.1 ' },
      { kind: 'address', from: 'submission_relay_host = 10.0.0.25 ', to: 'submission_relay_host = 127.0.0.1 ' },
      { kind: 'port', from: 'submission_relay_port = 25\n', to: `submission_relay_port = ${relay.port}\n` },
    ], 'deploy/mail/README.md (mail-dovecot-local-conf)');
    assert.ok(!/10\.0\.0\.\d+/.test(localConf), 'every README address replaced');
    writeFileSync(join(dir, 'local.conf'), localConf);
    writeFileSync(join(dir, 'hello.eml'), 'From: postmaster@example.com\r\nTo: alice@example.com\r\nSubject: Hello alice\r\n\r\nWelcome.\r\n');
    const env = block('ini', 'mail-dovecot-environment');
    assert.match(env, /Environment=MAIL_PROXY_NETS=/);
    assert.match(env, /Environment=MAIL_PROXY_SECRET_SHA256=/);
    // Ports are picked at run time; another process may take one before Dovecot binds it: then it
    // is tried again from scratch (a new namespace over new overlays, so the README's useradd runs
    // on a fresh /etc again), on new ports.
    for (let attempt = 1; ; attempt++) {
      [imapBackend, submissionBackend] = (await freePorts(2)) as [number, number];
      writeFileSync(
        join(dir, 'dovecot.conf'),
        [
          '!include /etc/dovecot/dovecot.conf',
          // What a test instance changes: where it listens and keeps its runtime files.
          'listen = 127.0.0.1',
          `base_dir = ${dir}/run`,
          `instance_name = credgate-recipe-${imapBackend}`,
          `log_path = ${dir}/dovecot.log`,
          // The name submission announces. Without it Dovecot looks the host's own name up (DNS, when
          // /etc/hosts lacks it), in every new login process: a slow resolver delays each greeting.
          'hostname = mail.example.com',
          `service imap-login {\n  inet_listener imap {\n    port = ${imapBackend}\n  }\n  inet_listener imaps {\n    port = 0\n  }\n}`,
          `service submission-login {\n  inet_listener submission {\n    port = ${submissionBackend}\n  }\n}`,
          '',
        ].join('\n'),
      );
      rmSync(join(dir, 'dovecot.log'), { force: true });
      const overlay = join(dir, `overlay-${attempt}`);
      for (const d of ['etc', 'etc-work', 'var', 'var-work']) mkdirSync(join(overlay, d), { recursive: true });
      const script = [
        'set -eu',
        ...['etc', 'var'].map((d) => `mount -t overlay overlay -o lowerdir=/${d},upperdir=${overlay}/${d},workdir=${overlay}/${d}-work /${d}`),
        // Debian's postinst links these to the ssl-cert package's snakeoil pair, absent without recommends.
        `[ -e /etc/dovecot/private/dovecot.pem ] || { cp ${dir}/mail.example.com.pem /etc/dovecot/private/dovecot.pem; cp ${dir}/mail.example.com.key /etc/dovecot/private/dovecot.key; }`,
        `cd ${DEPLOY_MAIL}`,
        '# --- deploy/mail/README.md ---',
        setup,
        `cp ${dir}/local.conf /etc/dovecot/local.conf`,
        "# --- the test: a Unix user named like an AS account, and a message in alice's INBOX ---",
        `useradd --no-create-home --home-dir /home/${UNIX_NAMED.username} ${UNIX_NAMED.username}`,
        'for d in alice alice/Maildir alice/Maildir/cur alice/Maildir/new alice/Maildir/tmp; do install -d -o vmail -g vmail -m 0700 /var/vmail/$d; done',
        `install -o vmail -g vmail -m 0600 ${dir}/hello.eml /var/vmail/alice/Maildir/new/1.recipe`,
        `exec dovecot -F -c ${dir}/dovecot.conf`,
      ].join('\n');
      dovecot = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script], {
        env: { PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin`, MAIL_PROXY_NETS: '127.0.0.1/32', MAIL_PROXY_SECRET_SHA256: createHash('sha256').update(BACKEND_SECRET).digest('hex') },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      dovecot.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
      try {
        await waitForGreeting(imapBackend, '* OK', dovecot, 30_000);
        await waitForGreeting(submissionBackend, '220 ', dovecot, 30_000);
        break;
      } catch (err) {
        await stop(dovecot);
        const log = (() => { try { return dovecotLog(); } catch { return ''; } })();
        if (attempt < 3 && /address already in use/i.test(stderr + log)) continue;
        throw new Error(`Dovecot (attempt ${attempt}): ${(err as Error).message}\nstderr: ${stderr}\nlog: ${log}`);
      }
    }

    // credgate: the README's settings, with this test's addresses, secret and policy file.
    const settings = parseYaml(block('yaml', 'mail-credgate')) as Record<string, unknown>;
    assert.deepEqual(Object.keys(settings).sort(), ['mailBackendPassword', 'mailImapBackend', 'mailPop3Backend', 'mailSmtpBackend', 'policyFile', 'trustedProxies']);
    assert.equal(settings.mailImapBackend, '10.0.0.20:143');
    assert.equal(settings.mailSmtpBackend, '10.0.0.20:587', 'SMTP goes to the same host: Dovecot submission');
    credgate = await startCredgate({
      ...settings,
      issuer: dev.issuer,
      audience: AUDIENCE,
      ...CLIENT,
      mailImapBackend: `127.0.0.1:${imapBackend}`,
      mailPop3Backend: undefined, // no POP3 here: refused (the README: a protocol without a backend is refused)
      mailSmtpBackend: `127.0.0.1:${submissionBackend}`,
      mailBackendPassword: BACKEND_SECRET,
      trustedProxies: ['127.0.0.1'],
      policyFile: MAIL_POLICY,
    });
    dev.setResourceServerJwksUrl(credgate.jwksUrl);

    // nginx: the README's mail block, with run-time ports (new ones if one was taken meanwhile), the
    // test certificate, credgate's address.
    const readmeMail = block('nginx', 'mail-nginx');
    for (let attempt = 1; ; attempt++) {
      ports.clear();
      const listens = [...new Set([...readmeMail.matchAll(/listen (\d+)/g)].map((m) => Number(m[1])))];
      const picked = await freePorts(listens.length);
      listens.forEach((port, i) => ports.set(port, picked[i]!));
      const mail = substitute(readmeMail, [
        ...[...ports].map(([readme, port]) => ({ kind: 'port' as const, from: `listen ${readme}`, to: `listen 127.0.0.1:${port}` })),
        { kind: 'address', from: 'auth_http 127.0.0.1:8080/auth/mail;', to: `auth_http ${new URL(credgate.url).host}/auth/mail;` },
        { kind: 'prefix', from: '/etc/nginx/credgate/nginx-mail.conf', to: join(DEPLOY_MAIL, 'nginx-mail.conf') },
        { kind: 'certificate', from: '/etc/ssl/mail.example.com.pem', to: join(dir, 'mail.example.com.pem') },
        { kind: 'certificate', from: '/etc/ssl/mail.example.com.key', to: join(dir, 'mail.example.com.key') },
      ], 'deploy/mail/README.md (mail-nginx)');
      assert.ok(!mail.includes('/etc/'), 'every README path replaced');
      writeFileSync(join(dir, 'nginx.conf'), [`load_module ${NGINX_MAIL_MODULE};`, 'worker_processes 1;', `error_log ${dir}/nginx-error.log info;`, 'events { worker_connections 64; }', mail, ''].join('\n'));
      rmSync(join(dir, 'nginx-error.log'), { force: true });
      nginx = spawn('nginx', ['-p', `${dir}/`, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'nginx-error.log'), '-g', `daemon off; pid ${dir}/nginx.pid;`], { env: { PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` }, stdio: 'ignore' });
      try {
        await waitForGreeting(ports.get(143)!, '* OK', nginx, 30_000);
        await waitForGreeting(ports.get(587)!, '220 ', nginx, 30_000);
        break;
      } catch (err) {
        await stop(nginx);
        const log = (() => { try { return readFileSync(join(dir, 'nginx-error.log'), 'utf8'); } catch { return ''; } })();
        if (attempt < 3 && /address already in use/i.test(log)) continue;
        throw new Error(`nginx (attempt ${attempt}): ${(err as Error).message}\nlog: ${log}`);
      }
    }
  });

  after(async () => {
    for (const child of [nginx, dovecot]) if (child) await stop(child);
    await credgate?.close();
    await relay?.close();
    await dev?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("the README's steps made vmail and /var/vmail inside the namespace only, and mail is stored as vmail", async () => {
    const passwd = readFileSync(inside('/etc/passwd'), 'utf8');
    const vmail = /^vmail:x:(\d+):(\d+):/m.exec(passwd);
    assert.ok(vmail, 'useradd made vmail');
    assert.ok(!readFileSync('/etc/passwd', 'utf8').includes('\nvmail:'), "the host's /etc/passwd is untouched");
    assert.equal(statSync(inside('/var/vmail')).uid, Number(vmail[1]));
    assert.match(readFileSync(inside('/etc/dovecot/conf.d/10-auth.conf'), 'utf8'), /^#!include auth-system\.conf\.ext/m);
    assert.equal(readFileSync(inside('/etc/dovecot/credgate.conf'), 'utf8'), readFileSync(join(DEPLOY_MAIL, 'dovecot-credgate.conf'), 'utf8'));
  });

  test('IMAP check commands: --ssl-reqd imap:// (STARTTLS on 143) and imaps:// (993) list alice\'s INBOX as vmail; without --ssl-reqd, or with a wrong password, no', async () => {
    for (const words of [imapStarttls, imaps]) {
      const result = await run(words, ALICE);
      assert.equal(result.code, 0, `${words.join(' ')}: ${result.stderr}`);
      assert.match(result.stdout, /^\* 1 FETCH \(ENVELOPE .*"Hello alice"/m);
    }
    assert.ok(imapStarttls.includes('--ssl-reqd'), 'the 143 command asks for STARTTLS');
    const plain = await run(
      imapStarttls.filter((w) => w !== '--ssl-reqd'),
      ALICE,
    );
    assert.notEqual(plain.code, 0, "nginx's `starttls only` refuses a login before STARTTLS");
    assert.doesNotMatch(plain.stdout, /FETCH/);
    const wrong = await run(imaps, 'not-alices-password');
    assert.equal(wrong.code, 67, `a wrong password is a refused login: ${wrong.stderr}`);
    assert.match(dovecotLog(), /imap-login: Info: Login: user=<alice>, method=PLAIN, rip=127\.0\.0\.1/);
    const cur = inside('/var/vmail/alice/Maildir/cur');
    assert.equal(statSync(cur).uid, statSync(inside('/var/vmail')).uid, 'Dovecot stores mail as vmail');
  });

  test('an AS account named like a Unix user of the mail host gets a vmail mailbox, not that user\'s uid and home', async () => {
    const result = await run(
      imapStarttls.map((w) => (w === 'alice' ? UNIX_NAMED.username : w)),
      UNIX_NAMED.password,
    );
    assert.equal(result.code, 21, `logged in and selected an empty INBOX (curl 21: FETCH 1:* is BAD on it): ${result.stderr}`);
    assert.match(result.stderr, /^< \* 0 EXISTS/m);
    assert.match(dovecotLog(), new RegExp(`imap-login: Info: Login: user=<${UNIX_NAMED.username}>`));
    const home = statSync(inside(`/var/vmail/${UNIX_NAMED.username}`));
    assert.equal(home.uid, statSync(inside('/var/vmail')).uid);
    const unixUid = new RegExp(`^${UNIX_NAMED.username}:x:(\\d+):`, 'm').exec(readFileSync(inside('/etc/passwd'), 'utf8'));
    assert.ok(unixUid, 'the Unix user exists inside the namespace');
    assert.notEqual(home.uid, Number(unixUid[1]));
    assert.equal(statSync(inside(`/home/${UNIX_NAMED.username}`), { throwIfNoEntry: false }), undefined);
    const wrong = await run(imaps.map((w) => (w === 'alice' ? UNIX_NAMED.username : w)), ALICE);
    assert.equal(wrong.code, 67);
  });

  test("SMTP check command: submitted through nginx (STARTTLS, AUTH) and Dovecot submission as alice, relayed to the MTA; from another client address too (allow_real_nets)", async () => {
    for (const from of ['127.0.0.1', '127.0.0.2']) {
      const before = relay.messages.length;
      const result = await run(smtp, ALICE, ['--interface', from]);
      assert.equal(result.code, 0, `${smtp.join(' ')} from ${from}: ${result.stderr}`);
      const message = await relay.waitFor((m) => relay.messages.indexOf(m) >= before && m.data.includes('Subject: recipe check'));
      assert.deepEqual([message.mailFrom, message.rcptTo], ['<alice@example.com>', ['<alice@example.com>']]);
      // nginx's XCLIENT announced the client's own address; the passdb checked nginx's.
      assert.match(message.data, new RegExp(`^Received: from .*\\(\\[${from.replace(/\./g, '\\.')}\\]\\)`, 'm'));
      assert.match(dovecotLog(), new RegExp(`submission-login: Info: Login: user=<alice>, method=PLAIN, rip=${from.replace(/\./g, '\\.')}`));
    }
    const wrong = await run(smtp, 'not-alices-password');
    assert.equal(wrong.code, 67, `a wrong password: ${wrong.stderr}`);
  });

  test("the /auth/mail command: Auth-Status OK, Auth-User alice and the backend secret; another user's name with alice's password is refused", async () => {
    const result = await run(authMail);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^HTTP\/1\.1 200 /);
    assert.match(result.stdout, /^auth-status: OK\r$/im);
    assert.match(result.stdout, /^auth-user: alice\r$/im);
    assert.match(result.stdout, new RegExp(`^auth-pass: ${BACKEND_SECRET}\\r$`, 'im'));
    const refused = await run(authMail.map((w) => (w === 'Auth-User: alice' ? 'Auth-User: bob' : w)));
    assert.match(refused.stdout, /^HTTP\/1\.1 401 /);
    assert.doesNotMatch(refused.stdout, /^auth-user:/im);
  });
});
