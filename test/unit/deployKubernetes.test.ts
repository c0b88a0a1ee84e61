import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, join, posix, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { parse, parseAllDocuments } from 'yaml';
import { envName, loadConfig } from '../../src/config/load.js';
import { configSchema } from '../../src/config/schema.js';
import { loadPolicyFile } from '../../src/policy/store.js';
import { documentedBlock, shellCommands } from '../fixtures/recipeDocs.js';

// Manifests are untyped YAML; the schemas check their shape.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Manifest = any;

const REPOSITORY = fileURLToPath(new URL('../../../', import.meta.url));
const K8S = join(REPOSITORY, 'deploy/kubernetes');
const BASE = join(K8S, 'base');
/** The overlays docs/deployment.md applies (recipe-test: kubernetes-apply: `kubectl apply -k DIR`). */
const OVERLAYS = shellCommands(documentedBlock('docs/deployment.md', 'kubernetes-apply').text).map((c) => {
  const m = /^kubectl apply -k (deploy\/kubernetes\/overlays\/[\w-]+)(?:\s|$)/.exec(c);
  assert.ok(m, `docs/deployment.md: ${c}`);
  return join(REPOSITORY, m[1]!);
});
assert.deepEqual(OVERLAYS.map((o) => basename(o)).sort(), readdirSync(join(K8S, 'overlays')).sort(), 'the docs apply every overlay there is');
const CREDGATE = { 'app.kubernetes.io/name': 'credgate' };

function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? yamlFiles(join(dir, e.name)) : /\.ya?ml$/.test(e.name) ? [join(dir, e.name)] : []));
}

function documents(file: string): Manifest[] {
  return parseAllDocuments(readFileSync(file, 'utf8')).map((doc) => {
    assert.deepEqual(doc.errors, [], `${relative(REPOSITORY, file)}: ${doc.errors.map((e) => e.message).join('; ')}`);
    return doc.toJS();
  }).filter((doc) => doc != null);
}

const kustomization = (dir: string) => parse(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')) as Manifest;

/** Files a kustomization uses as patches or generator input rather than as whole resources. */
function nonResources(dir: string): Set<string> {
  const k = kustomization(dir);
  const files = new Set<string>([join(dir, 'kustomization.yaml')]);
  for (const p of k.patches ?? []) if (p.path) files.add(join(dir, p.path));
  for (const g of k.configMapGenerator ?? []) for (const f of g.files ?? []) files.add(join(dir, f));
  return files;
}

/** Every whole resource in deploy/kubernetes (base and overlays), with the file it came from. */
function resources(): { file: string; doc: Manifest }[] {
  const skip = new Set([BASE, ...OVERLAYS].flatMap((d) => [...nonResources(d)]));
  return yamlFiles(K8S).filter((f) => !skip.has(f)).flatMap((file) => documents(file).map((doc) => ({ file, doc })));
}

/** The kubernetes-models class for a manifest (schemas generated from Kubernetes' OpenAPI; ServiceMonitor from prometheus-operator's CRD). */
async function model(doc: Manifest): Promise<new (data: unknown) => { validate(): void }> {
  const [group, version] = String(doc.apiVersion).includes('/') ? String(doc.apiVersion).split('/') : ['', String(doc.apiVersion)];
  const specifier = group === 'monitoring.coreos.com' ? `@kubernetes-models/prometheus-operator/${group}/${version}/${doc.kind}` : `kubernetes-models/${group ? `${group}/` : ''}${version}/${doc.kind}`;
  const module = (await import(specifier)) as Record<string, new (data: unknown) => { validate(): void }>;
  const Model = module[doc.kind];
  assert.ok(Model, `no model for ${doc.apiVersion} ${doc.kind}`);
  return Model;
}

async function validate(doc: Manifest, where: string): Promise<void> {
  const Model = await model(doc);
  assert.doesNotThrow(() => new Model(doc).validate(), where);
}

const matches = (selector: Record<string, string> | undefined, labels: Record<string, string> | undefined) =>
  selector !== undefined && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels?.[k] === v);

const one = (docs: Manifest[], kind: string, name = 'credgate'): Manifest => {
  const found = docs.filter((d) => d.kind === kind && d.metadata?.name === name);
  assert.equal(found.length, 1, `exactly one ${kind} ${name}`);
  return found[0];
};

const KNOWN_ENV = new Set(Object.keys(configSchema.shape).map(envName));

/** The checks every rendering of credgate's manifests must pass (base alone, or an overlay built by kustomize). */
function checkCredgate(docs: Manifest[], options: { policyConfigMap: (name: string) => boolean }): void {
  const deployment = one(docs, 'Deployment');
  const pod = deployment.spec.template;
  assert.ok(matches(deployment.spec.selector.matchLabels, pod.metadata.labels), 'Deployment selector matches its pod labels');
  assert.ok(matches(CREDGATE, pod.metadata.labels));
  const container = pod.spec.containers.find((c: Manifest) => c.name === 'credgate');
  const ports = new Map<string, number>(container.ports.map((p: Manifest) => [p.name, p.containerPort]));
  assert.ok(ports.has('http') && ports.has('metrics'));

  // Probes: liveness and start-up on /healthz, readiness on /readyz, all on the http port.
  for (const [probe, path] of [['livenessProbe', '/healthz'], ['startupProbe', '/healthz'], ['readinessProbe', '/readyz']] as const) {
    assert.equal(container[probe]?.httpGet?.path, path, probe);
    const port = container[probe].httpGet.port;
    assert.ok(port === 'http' || port === ports.get('http'), `${probe} on the http port`);
  }

  // Security: non-root, no privilege escalation, read-only root, no capabilities, seccomp.
  assert.equal(pod.spec.securityContext.runAsNonRoot, true);
  assert.notEqual(pod.spec.securityContext.runAsUser, 0);
  assert.equal(pod.spec.automountServiceAccountToken, false);
  const sc = container.securityContext;
  assert.equal(sc.runAsNonRoot, true);
  assert.equal(sc.allowPrivilegeEscalation, false);
  assert.equal(sc.readOnlyRootFilesystem, true);
  assert.notEqual(sc.privileged, true);
  assert.deepEqual(sc.capabilities.drop, ['ALL']);
  assert.equal(sc.capabilities.add, undefined);
  assert.equal((sc.seccompProfile ?? pod.spec.securityContext.seccompProfile)?.type, 'RuntimeDefault');
  // A typo in a security field would be ignored by Kubernetes (the schemas allow unknown fields).
  const allowed = new Set(['runAsNonRoot', 'runAsUser', 'runAsGroup', 'allowPrivilegeEscalation', 'readOnlyRootFilesystem', 'privileged', 'capabilities', 'seccompProfile', 'fsGroup']);
  for (const key of [...Object.keys(sc), ...Object.keys(pod.spec.securityContext)]) assert.ok(allowed.has(key), `unexpected securityContext field ${key}`);

  // Resources.
  assert.ok(container.resources.requests.cpu && container.resources.requests.memory && container.resources.limits.memory, 'requests and a memory limit');
  assert.ok(pod.spec.terminationGracePeriodSeconds > 10, 'longer than credgate\'s own 10 s drain');

  // Configuration: names are credgate's, ports agree, mounted files are where the settings say.
  const configMapName = container.envFrom.find((e: Manifest) => e.configMapRef)?.configMapRef.name;
  const configMap = one(docs, 'ConfigMap', configMapName);
  for (const name of Object.keys(configMap.data)) assert.ok(KNOWN_ENV.has(name), `ConfigMap ${configMapName}: ${name} is not a credgate setting`);
  for (const e of container.env) assert.ok(KNOWN_ENV.has(e.name), `env ${e.name} is not a credgate setting`);
  assert.equal(Number(configMap.data.PORT), ports.get('http'));
  assert.equal(Number(configMap.data.CREDGATE_METRICS_PORT), ports.get('metrics'));
  const mounts = new Map<string, string>(container.volumeMounts.map((m: Manifest) => [m.name, m.mountPath]));
  const volumes = new Map<string, Manifest>(pod.spec.volumes.map((v: Manifest) => [v.name, v]));
  for (const mount of container.volumeMounts) assert.ok(volumes.has(mount.name), `volume ${mount.name}`);
  const policyVolume = [...volumes.values()].find((v) => v.configMap && options.policyConfigMap(v.configMap.name));
  assert.ok(policyVolume, 'the policy ConfigMap is mounted');
  assert.equal(configMap.data.CREDGATE_POLICY_FILE, posix.join(mounts.get(policyVolume.name)!, 'policy.yaml'));
  const keyVolume = volumes.get('keys');
  assert.equal(configMap.data.CREDGATE_INTROSPECTION_KEY_FILE, posix.join(mounts.get('keys')!, keyVolume.secret.items[0].path));
  const secretNames = new Set([keyVolume.secret.secretName, ...container.env.map((e: Manifest) => e.valueFrom?.secretKeyRef?.name).filter(Boolean)]);
  assert.deepEqual([...secretNames], ['credgate'], 'one Secret');
  for (const name of ['CREDGATE_CLIENT_SECRET', 'CREDGATE_CACHE_KEY_SECRET', 'CREDGATE_REDIS_URL']) {
    assert.ok(container.env.some((e: Manifest) => e.name === name && e.valueFrom?.secretKeyRef?.key === name && !e.valueFrom.secretKeyRef.optional), `${name} from the Secret, required`);
  }

  // Objects around the Deployment point at its pods and ports.
  const service = one(docs, 'Service');
  assert.ok(matches(service.spec.selector, pod.metadata.labels), 'Service selects the pods');
  for (const p of service.spec.ports) assert.ok(ports.has(p.targetPort) || [...ports.values()].includes(p.targetPort), `Service port ${p.name} → a container port`);
  const pdb = one(docs, 'PodDisruptionBudget');
  assert.ok(matches(pdb.spec.selector.matchLabels, pod.metadata.labels), 'PDB selects the pods');
  assert.ok(pdb.spec.maxUnavailable !== undefined || pdb.spec.minAvailable !== undefined);
  const hpa = one(docs, 'HorizontalPodAutoscaler');
  assert.deepEqual([hpa.spec.scaleTargetRef.kind, hpa.spec.scaleTargetRef.name], ['Deployment', deployment.metadata.name]);
  assert.ok(hpa.spec.minReplicas >= 1 && hpa.spec.maxReplicas >= hpa.spec.minReplicas);
  const policy = one(docs, 'NetworkPolicy');
  assert.ok(matches(policy.spec.podSelector.matchLabels, pod.metadata.labels), 'NetworkPolicy applies to the pods');
  assert.deepEqual([...policy.spec.policyTypes].sort(), ['Egress', 'Ingress']);
  const ingressPorts = policy.spec.ingress.flatMap((r: Manifest) => r.ports.map((p: Manifest) => p.port));
  assert.deepEqual([...ingressPorts].sort(), ['http', 'metrics']);
  const egressPorts = new Set(policy.spec.egress.flatMap((r: Manifest) => r.ports.map((p: Manifest) => p.port)));
  for (const port of [53, 443, 6379]) assert.ok(egressPorts.has(port), `egress to port ${port}`);
  const monitor = one(docs, 'ServiceMonitor');
  assert.ok(matches(monitor.spec.selector.matchLabels, service.metadata.labels), 'ServiceMonitor selects the Service');
  assert.ok(monitor.spec.endpoints.every((e: Manifest) => service.spec.ports.some((p: Manifest) => p.name === e.port) && e.path === '/metrics'));
  assert.ok(one(docs, 'ServiceAccount').automountServiceAccountToken === false);
  assert.equal(pod.spec.serviceAccountName, 'credgate');
}

test('every manifest under deploy/kubernetes parses and names its apiVersion, kind and metadata.name', () => {
  const all = resources();
  assert.ok(all.length >= 10);
  for (const { file, doc } of all) {
    const where = relative(REPOSITORY, file);
    assert.equal(typeof doc.apiVersion, 'string', `${where}: apiVersion`);
    assert.equal(typeof doc.kind, 'string', `${where}: kind`);
    assert.match(String(doc.metadata?.name), /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, `${where}: metadata.name`);
  }
});

test('every manifest is valid against the Kubernetes schemas (kubernetes-models) and the ServiceMonitor against prometheus-operator\'s', async () => {
  for (const { file, doc } of resources()) await validate(doc, `${relative(REPOSITORY, file)}: ${doc.kind} ${doc.metadata.name}`);
  // The validator is not a rubber stamp.
  const broken = structuredClone(one(documents(join(BASE, 'deployment.yaml')), 'Deployment'));
  broken.spec.template.spec.containers[0].ports[0].containerPort = 'eighty';
  const Deployment = await model(broken);
  assert.throws(() => new Deployment(broken).validate(), /containerPort must be integer/);
  const noSelector = structuredClone(one(documents(join(BASE, 'poddisruptionbudget.yaml')), 'PodDisruptionBudget'));
  noSelector.spec.maxUnavailable = [1];
  const Pdb = await model(noSelector);
  assert.throws(() => new Pdb(noSelector).validate());
});

test('kustomizations: every resource, patch and generator file exists; overlays build on the base', () => {
  for (const dir of [BASE, ...OVERLAYS]) {
    const k = kustomization(dir);
    assert.equal(k.kind, 'Kustomization');
    for (const r of k.resources ?? []) assert.ok(existsSync(join(dir, r)), `${relative(REPOSITORY, dir)}: resource ${r}`);
    for (const p of k.patches ?? []) {
      if (p.path) assert.ok(existsSync(join(dir, p.path)), `${relative(REPOSITORY, dir)}: patch ${p.path}`);
      else assert.ok(p.patch && p.target?.kind && p.target?.name, 'inline patches name their target');
    }
    for (const g of k.configMapGenerator ?? []) for (const f of g.files) assert.ok(existsSync(join(dir, f)));
  }
  for (const dir of OVERLAYS) {
    const k = kustomization(dir);
    assert.ok(k.resources.includes('../../base'));
    assert.ok(k.namespace, 'an overlay sets the namespace');
    assert.ok(k.images?.some((i: Manifest) => i.name === 'credgate'), 'an overlay sets the image');
  }
});

test('the base: Deployment, Service, PodDisruptionBudget, HorizontalPodAutoscaler, NetworkPolicy and ServiceMonitor agree on labels, ports, probes and hardening', () => {
  const docs = kustomization(BASE).resources.flatMap((r: string) => documents(join(BASE, r)));
  const generated = kustomization(BASE).configMapGenerator.map((g: Manifest) => g.name);
  checkCredgate(docs, { policyConfigMap: (name) => generated.includes(name) });
  // Deny beside the allow: a pod label the Service no longer selects is caught.
  const drifted = structuredClone(docs);
  one(drifted, 'Deployment').spec.template.metadata.labels['app.kubernetes.io/name'] = 'credgate-v2';
  one(drifted, 'Deployment').spec.selector.matchLabels['app.kubernetes.io/name'] = 'credgate-v2';
  assert.throws(() => checkCredgate(drifted, { policyConfigMap: (name) => generated.includes(name) }));
});

test("the configuration in ConfigMap and Secret passes credgate's own validation once the placeholders are filled in, and the placeholders stop start-up", () => {
  const configMap = one(documents(join(BASE, 'configmap.yaml')), 'ConfigMap', 'credgate-config');
  const secret = one(documents(join(BASE, 'secret.yaml')), 'Secret', 'credgate');
  const fromSecret = Object.fromEntries(Object.entries(secret.stringData as Record<string, string>).filter(([k]) => k !== 'introspection.pem'));
  for (const name of Object.keys(fromSecret)) assert.ok(KNOWN_ENV.has(name), name);
  const filled = { CREDGATE_CLIENT_SECRET: 'client-secret', CREDGATE_CACHE_KEY_SECRET: 'ab'.repeat(32), CREDGATE_ADMIN_TOKEN: 'admin-token-0123456789-0123456789-abc' };
  const config = loadConfig({ env: { ...configMap.data, ...fromSecret, ...filled } });
  assert.equal(config.redisUrl, fromSecret.CREDGATE_REDIS_URL);
  assert.equal(config.metricsPort, 9464);
  assert.throws(() => loadConfig({ env: { ...configMap.data, ...fromSecret } }), /cacheKeySecret/);
  const secrets = resources().filter(({ doc }) => doc.kind === 'Secret');
  assert.deepEqual(secrets.map(({ file }) => relative(REPOSITORY, file)), ['deploy/kubernetes/base/secret.yaml'], 'one Secret, of placeholders');
});

test("the policy ConfigMap holds deploy/policies/git.yaml's rules and is a valid policy", () => {
  const file = join(BASE, 'policy.yaml');
  const strip = (text: string) => text.split('\n').filter((l) => !l.startsWith('#')).join('\n');
  assert.equal(strip(readFileSync(file, 'utf8')), strip(readFileSync(join(REPOSITORY, 'deploy/policies/git.yaml'), 'utf8')));
  assert.ok(loadPolicyFile(file).policy.ruleCount > 0);
});

const kubectl = spawnSync('kubectl', ['version', '--client'], { stdio: 'ignore' }).status === 0;

test('kubectl kustomize renders the base and each overlay offline; the result is schema-valid and passes the same checks; production ships no Secret', { skip: !kubectl && 'kubectl is not installed (the checks above ran on the files themselves)' }, async () => {
  for (const dir of [BASE, ...OVERLAYS]) {
    const rendered = spawnSync('kubectl', ['kustomize', dir], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(rendered.status, 0, rendered.stderr);
    const docs = parseAllDocuments(rendered.stdout).map((d) => d.toJS() as Manifest);
    for (const doc of docs) await validate(doc, `${basename(dir)}: ${doc.kind} ${doc.metadata.name}`);
    checkCredgate(docs, { policyConfigMap: (name) => /^credgate-policy-[a-z0-9]{10}$/.test(name) });
    const deployment = one(docs, 'Deployment');
    const image: string = deployment.spec.template.spec.containers[0].image;
    if (dir === BASE) continue;
    const namespace = kustomization(dir).namespace;
    assert.ok(docs.every((d) => d.metadata.namespace === namespace), 'every object in the overlay namespace');
    if (basename(dir) === 'production') {
      assert.ok(!docs.some((d) => d.kind === 'Secret'), 'production never ships the placeholder Secret');
      assert.match(image, /^registry\.example\.com\/credgate:\d+\.\d+\.\d+$/);
      assert.ok(one(docs, 'HorizontalPodAutoscaler').spec.minReplicas >= 3);
      assert.equal(one(docs, 'ConfigMap', 'credgate-config').data.CREDGATE_ISSUER, 'https://example.eu.auth0.com/');
    } else {
      assert.equal(image, 'credgate:dev');
      assert.ok(docs.some((d) => d.kind === 'Secret'));
      const redis = one(docs, 'Service', 'credgate-redis');
      const secret = one(docs, 'Secret', 'credgate');
      assert.equal(new URL(secret.stringData.CREDGATE_REDIS_URL).hostname, redis.metadata.name, 'the dev Redis is the one the Secret names');
    }
  }
});
