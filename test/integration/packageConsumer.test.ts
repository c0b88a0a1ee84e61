/**
 * What a TypeScript consumer of `credgate/fastify` gets: `npm pack` on a clean copy of the repository
 * (its prepack builds the sources with declarations), the tarball installed beside a consumer whose
 * code is docs/integrations/fastify.md's example as written (recipe-test: fastify-example; only its
 * port is replaced), type-checked with tsc (strict, NodeNext) and run against the embedded dev AS.
 *
 * npm installs from its local cache where it can (npm_config_prefer_offline): the packages are the
 * ones this repository's own `npm ci` fetched. About 45 s alone (the prepack build ~16 s, npm install
 * ~8 s, tsc with library checks ~11 s); the timeouts leave room for a loaded machine (96 s seen
 * during a full `npm test` on 2 shared cores).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { defaultDevUsers, startDevServer, type DevAuthorizationServer } from '../../src/devserver/index.js';
import { basicHeader } from '../fixtures/credgate.js';
import { cleanCopy } from '../fixtures/dockerfile.js';
import { accepts, startProcess, startWithPortRetry, type ManagedProcess } from '../fixtures/processes.js';
import { documentedBlock, REPOSITORY, substitute } from '../fixtures/recipeDocs.js';

const AUDIENCE = 'https://git.example.com';
const CLIENT = { clientId: 'consumer-client', clientSecret: 'consumer-client-secret-value' };
const INTROSPECTION_SECRET = 'consumer-introspection-secret';
const users = Object.fromEntries(defaultDevUsers().map((u) => [u.username, u]));

/**
 * What the machine says about reaching the registry (extra CA certificates, proxies), passed on as
 * it is; nothing of the outer `npm test` (its npm_* variables would steer the inner npm). Without the
 * CA variables a Node whose own CA store lacks the machine's registry CA (the node-lines binaries)
 * fails with SELF_SIGNED_CERT_IN_CHAIN.
 */
function passedThrough(): Record<string, string> {
  const wanted = /^(NODE_EXTRA_CA_CERTS|SSL_CERT_FILE|SSL_CERT_DIR|https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY)$/;
  return Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => wanted.test(e[0]) && e[1] !== undefined));
}

function run(command: string, args: string[], cwd: string, timeoutMs = 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      command,
      args,
      { cwd, timeout: timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8', env: { ...passedThrough(), PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', npm_config_prefer_offline: 'true', npm_config_update_notifier: 'false', npm_config_audit: 'false', npm_config_fund: 'false' } },
      (error, stdout, stderr) => resolve({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout, stderr }),
    );
  });
}
const versionOf = (name: string) => (JSON.parse(readFileSync(join(REPOSITORY, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
const TSC = join(REPOSITORY, 'node_modules/typescript/bin/tsc');

describe('credgate/fastify as an npm package: packed, installed and used from TypeScript (strict) as docs/integrations/fastify.md shows', { timeout: 180_000 }, () => {
  let dir: string;
  let tarball: string;
  let consumer: string;
  let dev: DevAuthorizationServer;
  let app: ManagedProcess | undefined;
  let port: number;
  const timings: string[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'credgate-package-'));
    const copy = join(dir, 'credgate');
    cleanCopy(REPOSITORY, copy);
    // The copy's build needs the dev dependencies (tsc); they are not in the package either way.
    symlinkSync(join(REPOSITORY, 'node_modules'), join(copy, 'node_modules'));
    mkdirSync(join(dir, 'packed'));
    let started = Date.now();
    const pack = await run('npm', ['pack', '--pack-destination', join(dir, 'packed')], copy);
    timings.push(`npm pack (prepack build) ${Date.now() - started} ms`);
    assert.equal(pack.code, 0, pack.stdout + pack.stderr);
    const packed = readdirSync(join(dir, 'packed'));
    assert.equal(packed.length, 1, packed.join(' '));
    tarball = join(dir, 'packed', packed[0]!);

    consumer = join(dir, 'consumer');
    mkdirSync(consumer);
    writeFileSync(
      join(consumer, 'package.json'),
      JSON.stringify({ name: 'credgate-consumer', private: true, type: 'module', dependencies: { credgate: `file:${tarball}`, fastify: `^${versionOf('fastify')}` }, devDependencies: { typescript: versionOf('typescript'), '@types/node': versionOf('@types/node') } }, null, 2),
    );
    writeFileSync(
      join(consumer, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noUncheckedIndexedAccess: true, outDir: 'out', types: ['node'], skipLibCheck: false }, files: ['app.ts'] }, null, 2),
    );
    // The docs' example; its port is this run's, from APP_PORT: picked when the app starts (not here, a
    // minute before), and another one if that was taken meanwhile, without compiling again.
    const example = documentedBlock('docs/integrations/fastify.md', 'fastify-example');
    assert.equal(example.lang, 'ts');
    writeFileSync(join(consumer, 'app.ts'), substitute(example.text, [{ kind: 'port', from: 'await app.listen({ port: 3000 });', to: "await app.listen({ host: '127.0.0.1', port: Number(process.env.APP_PORT) });" }], example.where));
    started = Date.now();
    const install = await run('npm', ['install'], consumer, 90_000);
    timings.push(`npm install ${Date.now() - started} ms`);
    assert.equal(install.code, 0, install.stdout + install.stderr);

    dev = await startDevServer({ audience: AUDIENCE, users: defaultDevUsers(), clients: [CLIENT], resourceServerClientSecret: INTROSPECTION_SECRET });
  }, { timeout: 150_000 });

  after(async () => {
    await app?.stop();
    await dev?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, { timeout: 15_000 });

  test('the tarball holds the built sources with their declarations and the README, nothing else', async (t) => {
    t.diagnostic(timings.join(', '));
    const listing = await run('tar', ['-tzf', tarball], dir);
    assert.equal(listing.code, 0, listing.stderr);
    const files = listing.stdout.split('\n').filter(Boolean);
    for (const wanted of ['package/package.json', 'package/README.md', 'package/LICENSE', 'package/dist/src/fastify/plugin.js', 'package/dist/src/fastify/plugin.d.ts', 'package/dist/src/cli.js']) assert.ok(files.includes(wanted), `${wanted} in ${tarball}`);
    const unexpected = files.filter((f) => !/^package\/(package\.json|README\.md|LICENSE|dist\/src\/.+\.(js|d\.ts))$/.test(f));
    assert.deepEqual(unexpected, []);
    assert.ok(!files.some((f) => f.startsWith('package/dist/test/') || f.startsWith('package/src/') || f.endsWith('.map')));
  });

  test('the example type-checks with tsc --strict against the installed package; a misuse of the plugin\'s types does not', { timeout: 90_000 }, async (t) => {
    let started = Date.now();
    const ok = await run('node', [TSC, '-p', 'tsconfig.json'], consumer);
    t.diagnostic(`tsc (strict, skipLibCheck false) ${Date.now() - started} ms`);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    // The deny beside it: were the types `any` (no declarations), this would compile.
    writeFileSync(join(consumer, 'misuse.ts'), [
      "import Fastify from 'fastify';",
      "import { credgate } from 'credgate/fastify';",
      'const app = Fastify();',
      "await app.register(credgate, { config: { issuer: 42 } });",
      "app.get('/', async (request) => request.credgate.subject.toUpperCase());",
      '',
    ].join('\n'));
    writeFileSync(join(consumer, 'tsconfig.misuse.json'), JSON.stringify({ extends: './tsconfig.json', compilerOptions: { noEmit: true, skipLibCheck: true }, files: ['misuse.ts'] }));
    started = Date.now();
    const misuse = await run('node', [TSC, '-p', 'tsconfig.misuse.json'], consumer);
    t.diagnostic(`tsc on the misuse ${Date.now() - started} ms`);
    assert.notEqual(misuse.code, 0);
    assert.match(misuse.stdout, /misuse\.ts\(4,[0-9]+\): error TS2769: No overload matches this call/, misuse.stdout); // issuer: a number, not a URL string
    assert.match(misuse.stdout, /misuse\.ts\(5,[0-9]+\): error TS18048: 'request\.credgate' is possibly 'undefined'/, misuse.stdout);
  });

  test('the compiled example runs against the dev AS: alice reads, a wrong password is 401, carol may not write, / is public', { timeout: 30_000 }, async () => {
    // tsc emitted out/app.js in the previous test; compile again if this one runs alone.
    if (!readdirSync(consumer).includes('out')) assert.equal((await run('node', [TSC, '-p', 'tsconfig.json'], consumer)).code, 0);
    // A port taken before the app listens (EADDRINUSE): the app exits and is started again on another.
    ({ process: app, port } = await startWithPortRetry(
      'the consumer app',
      (port) => {
        const started = startProcess('node', ['out/app.js'], {
          cwd: consumer,
          env: {
            PATH: process.env.PATH ?? '/usr/bin:/bin',
            APP_PORT: String(port), // not PORT: loadConfig() would read that one as credgate's own port
            CREDGATE_ISSUER: dev.issuer,
            CREDGATE_AUDIENCE: AUDIENCE,
            CREDGATE_CLIENT_ID: CLIENT.clientId,
            CREDGATE_CLIENT_SECRET: CLIENT.clientSecret,
            CREDGATE_INTROSPECTION_CLIENT_SECRET: INTROSPECTION_SECRET,
          },
        });
        return { process: started, describe: () => started.output() };
      },
      (_, port) => accepts(port),
      15_000,
    ));
    const base = `http://127.0.0.1:${port}`;
    const alice = await fetch(`${base}/repos/demo`, { headers: { authorization: basicHeader('alice', users.alice!.password) } });
    assert.equal(alice.status, 200, app.output());
    const body = (await alice.json()) as { readBy: { username: string; subject: string; credential: string } };
    assert.deepEqual([body.readBy.username, body.readBy.subject, body.readBy.credential], ['alice', users.alice!.sub, 'password']);
    const wrong = await fetch(`${base}/repos/demo`, { headers: { authorization: basicHeader('alice', 'not her password') } });
    assert.equal(wrong.status, 401);
    assert.match(wrong.headers.get('www-authenticate') ?? '', /^Basic /);
    const carolWrites = await fetch(`${base}/repos/demo`, { method: 'PUT', headers: { authorization: basicHeader('carol', users.carol!.password) } });
    assert.equal(carolWrites.status, 403);
    assert.equal((await fetch(`${base}/`)).status, 200);
  });
});
