import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { cli } from '../fixtures/cli.js';

/**
 * credgate never starts open by accident: `serve` (what the image, the unit and the manifests run)
 * needs an issuer and never falls back to the embedded demo authorization server, whose users have
 * published passwords; dev mode runs only when asked for by name, on loopback, outside production.
 */
const PRODUCTION_LIKE = { NODE_ENV: 'production', HOST: '0.0.0.0', PORT: '0', CREDGATE_CLIENT_ID: 'prod-client', CREDGATE_CLIENT_SECRET: 'prod-client-secret-value', CREDGATE_AUDIENCE: 'https://git.example.com' };

test('serve with CREDGATE_ISSUER unset or empty exits 2 naming the variable, whatever else is set', async () => {
  const envs: Record<string, string>[] = [{}, { CREDGATE_ISSUER: '' }, PRODUCTION_LIKE, { ...PRODUCTION_LIKE, CREDGATE_ISSUER: '' }];
  for (const env of envs) {
    const { code, stderr, stdout } = await cli(['serve'], env);
    assert.equal(code, 2, JSON.stringify(env));
    assert.match(stderr, /CREDGATE_ISSUER/);
    assert.doesNotMatch(stdout + stderr, /DEV MODE|correct horse/);
  }
  // Deny beside the allow: with no command at all it is serve, and refuses the same way.
  assert.equal((await cli([], {})).code, 2);
});

test('dev mode is refused under NODE_ENV=production, off loopback, and with an issuer configured', async () => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ NODE_ENV: 'production', HOST: '127.0.0.1', PORT: '0' }, /NODE_ENV=production/],
    [{ HOST: '0.0.0.0', PORT: '0' }, /loopback only/],
    [{ HOST: '::', PORT: '0' }, /loopback only/],
    [{ CREDGATE_ISSUER: 'https://tenant.example.com/', CREDGATE_AUDIENCE: 'a', CREDGATE_CLIENT_ID: 'c', CREDGATE_CLIENT_SECRET: 's', PORT: '0' }, /credgate serve/],
  ];
  for (const [env, message] of cases) {
    const { code, stderr, stdout } = await cli(['dev'], env);
    assert.equal(code, 2, JSON.stringify(env));
    assert.match(stderr, message);
    assert.doesNotMatch(stdout, /DEV MODE/);
  }
});

/** The command line each deployment artifact runs, with the environment it sets. */
function artifacts(): { name: string; args: string[]; env: Record<string, string> }[] {
  const dockerfile = readFileSync('deploy/docker/Dockerfile', 'utf8');
  const entrypoint = JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(dockerfile)![1]!) as string[];
  const cmd = JSON.parse(/^CMD (\[.*\])$/m.exec(dockerfile)![1]!) as string[];
  assert.deepEqual(entrypoint.slice(0, 2), ['node', 'dist/src/cli.js']);
  const dockerEnv = Object.fromEntries([...dockerfile.matchAll(/^ENV (\w+)=(\S+)$/gm)].map((m) => [m[1]!, m[2]!]));

  const unit = readFileSync('deploy/systemd/credgate.service', 'utf8');
  const execStart = /^ExecStart=\S+ \S+cli\.js (.*)$/m.exec(unit)![1]!.split(/\s+/);
  const unitEnv = Object.fromEntries([...unit.matchAll(/^Environment=(\w+)=(\S+)$/gm)].map((m) => [m[1]!, m[2]!]));

  const deployment = parseYaml(readFileSync('deploy/kubernetes/base/deployment.yaml', 'utf8')) as {
    spec: { template: { spec: { containers: { name: string; args: string[]; env?: { name: string; value?: string }[] }[] } } };
  };
  const container = deployment.spec.template.spec.containers.find((c) => c.name === 'credgate')!;
  const k8sEnv = Object.fromEntries((container.env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, e.value!]));
  return [
    { name: 'container image', args: cmd, env: dockerEnv },
    { name: 'systemd unit', args: execStart, env: unitEnv },
    { name: 'Kubernetes deployment', args: container.args, env: k8sEnv },
  ];
}

test('the container image, the systemd unit and the Kubernetes deployment run serve, and so exit 2 without an issuer', async () => {
  for (const { name, args, env } of artifacts()) {
    assert.deepEqual(args, ['serve'], name);
    const { code, stderr } = await cli(args, { ...env, ...PRODUCTION_LIKE, PORT: '0' });
    assert.equal(code, 2, name);
    assert.match(stderr, /CREDGATE_ISSUER/, name);
  }
});
