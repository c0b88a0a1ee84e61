import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { parse } from 'yaml';
import { envName, loadConfig } from '../../src/config/load.js';
import { configSchema } from '../../src/config/schema.js';
import { loadPolicyFile } from '../../src/policy/store.js';
import { devModeRefusal } from '../../src/dev/devMode.js';
import { documentedBlock, shellCommands } from '../fixtures/recipeDocs.js';

const REPOSITORY = fileURLToPath(new URL('../../../', import.meta.url));
/** docs/deployment.md's compose commands (recipe-test: compose-up): `docker compose -f FILE up --build`, then a curl. */
const [UP, CURL] = shellCommands(documentedBlock('docs/deployment.md', 'compose-up').text);
const COMPOSE_FILE = join(REPOSITORY, /^docker compose -f (\S+) up --build$/.exec(UP ?? '')?.[1] ?? 'the docs name no compose file');
const DIR = dirname(COMPOSE_FILE);
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const compose = parse(readFileSync(COMPOSE_FILE, 'utf8'), { merge: true }) as any;
const services = compose.services as Record<string, { volumes?: string[]; environment?: Record<string, string>; [k: string]: unknown }>;
const has = (command: string, args: string[]) => spawnSync(command, args, { stdio: 'ignore' }).status === 0;

describe('deploy/docker/compose.yaml (credgate, Redis, nginx, Prometheus)', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'credgate-compose-'));
  after(() => rmSync(tmp, { recursive: true, force: true }));

  test('the four services; credgate is built by deploy/docker/Dockerfile from the repository root and runs hardened', () => {
    assert.deepEqual(Object.keys(services).sort(), ['credgate', 'nginx', 'prometheus', 'redis']);
    const credgate = services.credgate as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
    assert.equal(resolve(DIR, credgate.build.context), resolve(REPOSITORY));
    assert.ok(existsSync(join(resolve(DIR, credgate.build.context), credgate.build.dockerfile)));
    assert.equal(credgate.read_only, true);
    assert.deepEqual(credgate.cap_drop, ['ALL']);
    assert.deepEqual(credgate.security_opt, ['no-new-privileges:true']);
    assert.equal(credgate.depends_on.redis.condition, 'service_healthy');
    // Published ports only on loopback: a try-out must not open credgate, Redis or Prometheus to the network.
    for (const [name, service] of Object.entries(services)) for (const port of (service.ports as string[] | undefined) ?? []) assert.match(port, /^127\.0\.0\.1:/, name);
    assert.equal(services.redis!.ports, undefined);
  });

  test("credgate's environment is credgate settings only and passes its validation; Redis is the compose service; the try-out policy is valid", () => {
    const known = new Set([...Object.keys(configSchema.shape).map(envName), 'NODE_ENV']);
    const env = Object.fromEntries(
      Object.entries(services.credgate!.environment!).map(([k, v]) => [k, String(v).replace(/^\$\{\w+:-(.*)\}$/, '$1')]),
    );
    for (const name of Object.keys(env)) assert.ok(known.has(name), `${name} is not a credgate setting`);
    const config = loadConfig({ env: { ...env, CREDGATE_POLICY_FILE: join(DIR, 'policy.yaml') } });
    assert.equal(new URL(config.redisUrl!).hostname, 'redis');
    assert.equal(config.issuer, undefined, 'dev mode');
    // Dev mode by name only, and one that starts: not production, loopback only.
    assert.deepEqual((services.credgate as { command?: string[] }).command, ['dev']);
    assert.equal(devModeRefusal(config, env), undefined);
    assert.ok(devModeRefusal(config, { ...env, NODE_ENV: 'production' }), 'the image default would refuse');
    for (const name of ['nginx', 'prometheus']) assert.equal((services[name] as { network_mode?: string }).network_mode, 'service:credgate', `${name} reaches credgate on loopback`);
    assert.ok(loadPolicyFile(join(DIR, 'policy.yaml')).policy.ruleCount > 0);
    // Deny beside the allow: Redis without the shared HMAC key is refused.
    assert.throws(() => loadConfig({ env: { ...env, CREDGATE_CACHE_KEY_SECRET: '' } }), /cacheKeySecret/);
  });

  test("the docs' curl line goes to the port compose publishes for nginx, on 127.0.0.1, with a demo user of dev mode", () => {
    const m = /^curl -u '([^:]+):([^']+)' http:\/\/127\.0\.0\.1:(\d+)\/ /.exec(`${CURL ?? ''} `);
    assert.ok(m, `docs/deployment.md: ${CURL}`);
    // nginx shares credgate's network namespace: its port 80 is published on the credgate service.
    const published = ((services.credgate as { ports?: string[] }).ports ?? []).map((p) => p.split(':'));
    assert.ok(published.some(([host, port, target]) => host === '127.0.0.1' && port === m[3] && target === '80'), `127.0.0.1:${m[3]} → nginx :80 in ${JSON.stringify(published)}`);
    assert.equal(m[1], 'alice');
  });

  test('every file compose mounts exists (deploy/nginx recipe, metrics/ rules, the site and Prometheus configs)', () => {
    for (const [name, service] of Object.entries(services)) {
      for (const volume of service.volumes ?? []) {
        const source = volume.split(':')[0]!;
        if (!source.startsWith('.')) continue;
        assert.ok(existsSync(resolve(DIR, source)), `${name}: ${source}`);
      }
    }
    const nginxMounts = services.nginx!.volumes!.map((v) => v.split(':')[0]);
    assert.ok(nginxMounts.includes('../nginx/credgate-auth.conf') && nginxMounts.includes('../nginx/protected-app.conf'), 'the deploy/nginx recipe, unchanged');
  });

  test('promtool accepts the Prometheus configuration with the rules from metrics/, and it scrapes the metrics port credgate is given', { skip: !has('promtool', ['--version']) && 'promtool is not installed (test/setup.sh installs it)' }, () => {
    const prometheus = join(tmp, 'prometheus');
    mkdirSync(prometheus);
    // As compose mounts them: the configuration and the two rule files side by side.
    for (const volume of services.prometheus!.volumes!) {
      const [source, target] = volume.split(':');
      copyFileSync(resolve(DIR, source!), join(prometheus, target!.split('/').at(-1)!));
    }
    const result = spawnSync('promtool', ['check', 'config', join(prometheus, 'prometheus.yml')], { encoding: 'utf8' });
    assert.equal(result.status, 0, result.stdout + result.stderr);
    const config = parse(readFileSync(join(DIR, 'prometheus.yml'), 'utf8'));
    assert.equal(config.scrape_configs[0].job_name, 'credgate');
    assert.equal(config.scrape_configs[0].static_configs[0].targets[0], `127.0.0.1:${services.credgate!.environment!.CREDGATE_METRICS_PORT}`);
  });

  test('nginx -t accepts the try-out site with the deploy/nginx files it includes', { skip: !existsSync('/usr/sbin/nginx') && 'nginx is not installed (test/setup.sh installs it)' }, () => {
    // Only what nginx -t cannot have here changes: the compose host name (no DNS for it outside
    // compose) and the include directory (the test's copy instead of /etc/nginx/credgate).
    const includes = join(tmp, 'credgate');
    mkdirSync(includes);
    for (const file of ['credgate-auth.conf', 'protected-app.conf']) copyFileSync(join(REPOSITORY, 'deploy/nginx', file), join(includes, file));
    const site = readFileSync(join(DIR, 'nginx.conf'), 'utf8').replace('server credgate:8080;', 'server 127.0.0.1:8080;').replaceAll('/etc/nginx/credgate/', `${includes}/`);
    writeFileSync(join(tmp, 'site.conf'), site);
    mkdirSync(join(tmp, 'temp'));
    const main = [
      `error_log ${join(tmp, 'error.log')};`,
      `pid ${join(tmp, 'nginx.pid')};`,
      'events {}',
      'http {',
      `  access_log off;`,
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${join(tmp, 'temp', t)};`),
      `  include ${join(tmp, 'site.conf')};`,
      '}',
    ].join('\n');
    writeFileSync(join(tmp, 'nginx.conf'), main);
    const result = spawnSync('/usr/sbin/nginx', ['-t', '-p', tmp, '-c', join(tmp, 'nginx.conf')], { encoding: 'utf8' });
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stderr, /test is successful/);
    assert.equal(dirname(join(tmp, 'nginx.conf')), tmp);
  });
});
