import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { envName, loadConfig } from '../../src/config/load.js';
import { configFields, REFERENCE_FILE, renderConfigurationReference } from '../../src/config/reference.js';
import { configSchema } from '../../src/config/schema.js';
import { REQUIRED_ENV } from '../fixtures/configEnv.js';

test('docs/configuration.md is what the schema renders (run `npm run docs` after changing src/config/schema.ts)', () => {
  let committed: string;
  try {
    committed = readFileSync(REFERENCE_FILE, 'utf8');
  } catch {
    assert.fail('docs/configuration.md is missing: run npm run docs');
  }
  const rendered = renderConfigurationReference();
  if (committed !== rendered) {
    const a = committed.split('\n');
    const b = rendered.split('\n');
    const line = a.findIndex((l, i) => l !== b[i]);
    assert.fail(
      `docs/configuration.md is out of date: run npm run docs and commit the result.\n` +
        `first difference at line ${line + 1}:\n  committed: ${a[line] ?? '(end of file)'}\n  generated: ${b[line] ?? '(end of file)'}`,
    );
  }
});

test('every configuration key is documented, once, with its environment variable', () => {
  const fields = configFields();
  assert.deepEqual(fields.map((f) => f.key), Object.keys(configSchema.shape));
  for (const field of fields) {
    assert.ok(field.description.length > 10, `${field.key}: description`);
    assert.equal(field.env, envName(field.key));
  }
});

test('the defaults the reference shows are the ones the schema applies', () => {
  const config = loadConfig({ env: REQUIRED_ENV }) as unknown as Record<string, unknown>;
  const byKey = new Map(configFields().map((f) => [f.key, f]));
  for (const [key, value] of Object.entries(config)) {
    const shown = byKey.get(key)!.default;
    if (envName(key) in REQUIRED_ENV || key === 'maxHeapUsedBytes') continue;
    if (Array.isArray(value)) assert.equal(shown, value.length === 0 ? 'none' : `\`${value.join(',')}\``, key);
    else assert.ok(shown.startsWith(`\`${String(value)}\``), `${key}: ${shown} vs ${String(value)}`);
  }
  assert.equal(byKey.get('issuer')!.default, 'required by `credgate serve`');
  assert.equal(byKey.get('maxHeapUsedBytes')!.default, "90 % of V8's heap limit", 'a machine-dependent default is described, not printed');
  assert.equal(byKey.get('passwordGrantScope')!.default, '—');
});

test('types and bounds are read off the schema', () => {
  const byKey = new Map(configFields().map((f) => [f.key, f]));
  assert.equal(byKey.get('clockToleranceSeconds')!.type, 'integer, 0–300');
  assert.equal(byKey.get('allowInsecureHttp')!.type, 'boolean');
  assert.equal(byKey.get('authThrottledStatus')!.type, '`401` or `429`');
  assert.equal(byKey.get('issuer')!.type, 'URL');
  assert.equal(byKey.get('scopeClaims')!.type, 'non-empty list of `scope`, `scp` or `permissions`');
  assert.equal(byKey.get('tokenUsernames')!.type, 'list, each a string, 1–64 characters');
});
