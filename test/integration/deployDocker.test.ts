import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { cleanCopy, followDockerfile, parseDockerfile, type Stage } from '../fixtures/dockerfile.js';
import { documentedBlock, shellCommands } from '../fixtures/recipeDocs.js';
import { defaultDevUsers, startDevServer } from '../../src/devserver/index.js';

const REPOSITORY = fileURLToPath(new URL('../../../', import.meta.url));
/** docs/deployment.md's `docker build -f FILE -t credgate CONTEXT` (recipe-test: docker-build): what is built, and from where. */
const BUILD = (() => {
  const commands = shellCommands(documentedBlock('docs/deployment.md', 'docker-build').text);
  assert.equal(commands.length, 1, commands.join('\n'));
  const m = /^docker build -f (\S+) -t credgate (\S+)$/.exec(commands[0]!);
  assert.ok(m, `docs/deployment.md: ${commands[0]}`);
  return { dockerfile: join(REPOSITORY, m[1]!), context: resolve(REPOSITORY, m[2]!) };
})();
const DOCKERFILE = BUILD.dockerfile;

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = createServer().once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });

/** Every file under `dir` with its size and mtime, to show that the running service wrote nothing. */
function snapshot(dir: string): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (d: string) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const path = join(d, entry.name);
      if (entry.isDirectory()) walk(path);
      else {
        const s = statSync(path);
        files.set(relative(dir, path), `${s.size}:${s.mtimeMs}`);
      }
    }
  };
  walk(dir);
  return files;
}

/**
 * The Dockerfile's own steps build credgate from a clean copy of the repository and start it.
 * There is no container engine here or in CI, so test/fixtures/dockerfile.ts follows the file:
 * COPY into a directory per stage, RUN verbatim there, then ENTRYPOINT + CMD, then the HEALTHCHECK.
 *
 * `npm ci` runs as written; npm is told to prefer its local cache (npm_config_prefer_offline), the
 * stand-in for the Dockerfile's cache mount on /root/.npm: packages already downloaded for this
 * repository are not fetched again, which keeps this test at about half a minute instead of
 * depending on the registry's speed. Copying or symlinking the repository's node_modules was not
 * chosen: it would skip `npm ci --omit=dev`, the step that decides what the image ships.
 */
describe('deploy/docker/Dockerfile builds and starts credgate from a clean copy', { timeout: 180_000 }, () => {
  let workspace: string;
  let stages: Stage[];
  let runtime: Stage;
  let child: ChildProcess | undefined;
  let output = '';

  before(async () => {
    workspace = mkdtempSync(join(tmpdir(), 'credgate-docker-'));
    const context = join(workspace, 'context');
    assert.equal(BUILD.context, resolve(REPOSITORY), 'the docs build from the repository root');
    cleanCopy(BUILD.context, context);
    assert.ok(!existsSync(join(context, 'node_modules')) && !existsSync(join(context, 'dist')), 'the copy is clean');
    stages = await followDockerfile(parseDockerfile(readFileSync(DOCKERFILE, 'utf8')), {
      context,
      workspace: join(workspace, 'stages'),
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: process.env.HOME ?? '/root',
        npm_config_prefer_offline: 'true',
        npm_config_update_notifier: 'false',
      },
    });
    runtime = stages.at(-1)!;
  });

  after(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await new Promise((r) => child!.once('exit', r));
    }
    if (workspace) rmSync(workspace, { recursive: true, force: true });
  });

  test('two stages: the image is built with dev dependencies, the runtime stage ships production ones only, on a Node LTS image, as a non-root user', () => {
    assert.deepEqual(stages.map((s) => s.name), ['build', 'runtime']);
    assert.match(runtime.image, /^node:(22|24)-[a-z]+-slim$/);
    assert.equal(stages[0]!.image, runtime.image);
    assert.ok(stages[0]!.runs.some((r) => /^npm ci\b/.test(r)) && stages[0]!.runs.includes('npm run build'));
    assert.ok(runtime.runs.some((r) => /^npm ci .*--omit=dev/.test(r)));
    const app = join(runtime.root, runtime.workdir);
    assert.ok(existsSync(join(app, 'dist/src/cli.js')));
    assert.ok(existsSync(join(app, 'node_modules/fastify')) && existsSync(join(app, 'node_modules/ioredis')));
    for (const dev of ['typescript', 'oidc-provider', 'fast-check']) assert.ok(!existsSync(join(app, 'node_modules', dev)), `${dev} is a dev dependency`);
    assert.ok(!existsSync(join(app, 'src')) && !existsSync(join(app, 'dist/test')), 'no sources or tests in the image');
    assert.ok(runtime.user !== undefined && !['root', '0', '0:0'].includes(runtime.user), `USER ${runtime.user}`);
    assert.equal(runtime.env.NODE_ENV, 'production');
    assert.deepEqual(runtime.exposed, ['8080']);
    assert.ok(runtime.healthcheck, 'HEALTHCHECK');
    assert.equal(runtime.healthcheck[0], 'node', 'slim images have no curl');
  });

  test('ENTRYPOINT + CMD without an issuer exit 2 naming CREDGATE_ISSUER: the image never starts the demo AS', () => {
    const app = join(runtime.root, runtime.workdir);
    const [command, ...args] = [...runtime.entrypoint!, ...runtime.cmd!];
    const result = spawnSync(command!, args, { cwd: app, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...runtime.env, PORT: '0', HOST: '127.0.0.1' }, timeout: 15_000, encoding: 'utf8' });
    assert.equal(result.status, 2, result.stderr);
    assert.match(result.stderr, /CREDGATE_ISSUER/);
    assert.doesNotMatch(result.stdout, /DEV MODE/);
  });

  test('ENTRYPOINT + CMD start credgate against an authorization server: /healthz, /readyz and a decision answer; the HEALTHCHECK passes, then fails once it is gone', async () => {
    const app = join(runtime.root, runtime.workdir);
    const before = snapshot(app);
    const [command, ...args] = [...runtime.entrypoint!, ...runtime.cmd!];
    const client = { clientId: 'image-client', clientSecret: 'image-client-secret-value' };
    const dev = await startDevServer({ audience: 'https://git.example.com', users: defaultDevUsers(), clients: [client], resourceServerClientSecret: 'image-introspection-secret' });
    after(() => dev.close());
    // The container's environment: the image's ENV, a port, the AS settings, and nothing from the test process.
    let env: Record<string, string> = {};
    let base = '';
    // The port is picked at run time: if another process took it meanwhile, start again on another.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      env = {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        ...runtime.env,
        PORT: String(port),
        CREDGATE_ISSUER: dev.issuer,
        CREDGATE_AUDIENCE: 'https://git.example.com',
        CREDGATE_CLIENT_ID: client.clientId,
        CREDGATE_CLIENT_SECRET: client.clientSecret,
        CREDGATE_INTROSPECTION_CLIENT_SECRET: 'image-introspection-secret',
      };
      output = '';
      const started = spawn(command!, args, { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] });
      child = started;
      started.stdout!.on('data', (c: Buffer) => (output += c.toString()));
      started.stderr!.on('data', (c: Buffer) => (output += c.toString()));
      base = `http://127.0.0.1:${port}`;
      const deadline = Date.now() + 20_000;
      let exited = false;
      for (;;) {
        if (started.exitCode !== null) {
          exited = true;
          break;
        }
        const ok = /credgate listening/.test(output) && (await fetch(`${base}/healthz`).then((r) => r.ok, () => false));
        if (ok) break;
        if (Date.now() > deadline) assert.fail(`no /healthz within 20 s:\n${output}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      if (!exited) break;
      if (attempt < 3 && /EADDRINUSE/.test(output)) continue;
      assert.fail(`credgate exited ${started.exitCode}:\n${output}`);
    }
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    const verify = (password: string) =>
      fetch(`${base}/v1/verify`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password }) }).then((r) => r.json() as Promise<{ allow: boolean; reason: string }>);
    const alice = defaultDevUsers().find((u) => u.username === 'alice')!;
    assert.deepEqual(await verify(alice.password).then((d) => [d.allow, d.reason]), [true, 'ok']);
    assert.deepEqual(await verify('not the password').then((d) => [d.allow, d.reason]), [false, 'invalid_credentials']);

    const [hcCommand, ...hcArgs] = runtime.healthcheck!;
    const healthcheck = () => spawnSync(hcCommand!, hcArgs, { cwd: app, env, timeout: 10_000 }).status;
    assert.equal(healthcheck(), 0);

    assert.deepEqual(snapshot(app), before, 'credgate wrote nothing under its root (read-only root filesystem)');

    child.kill('SIGTERM');
    const code = await new Promise<number | null>((r) => child!.once('exit', (c) => r(c)));
    assert.equal(code, 0, output);
    assert.equal(healthcheck(), 1, 'the health check fails once credgate is gone');
  });
});
