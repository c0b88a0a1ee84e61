import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../errors.js';
import { configSchema, LIST_KEYS, type Config } from './schema.js';

/** `clientSecret` → `CREDGATE_CLIENT_SECRET`; `host`/`port` keep the conventional bare names. */
export function envName(key: string): string {
  if (key === 'host' || key === 'port') return key.toUpperCase();
  return 'CREDGATE_' + key.replace(/[A-Z]/g, (c) => '_' + c).toUpperCase();
}

function readYaml(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, 'config');
  }
  let doc: unknown;
  try {
    doc = parseYaml(text, { maxAliasCount: 10 });
  } catch (err) {
    throw new ConfigError(`config file ${file} is not valid YAML: ${(err as Error).message.split('\n')[0]}`, 'config');
  }
  if (doc == null) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError(`config file ${file} must hold a mapping of keys`, 'config');
  return doc as Record<string, unknown>;
}

/**
 * Builds the configuration from an optional YAML file and the environment (environment wins),
 * validates it once and returns it frozen. Throws ConfigError naming the key and what is wrong.
 */
export function loadConfig(options: { file?: string; env?: NodeJS.ProcessEnv } = {}): Config {
  const env = options.env ?? process.env;
  const file = options.file ?? env.CREDGATE_CONFIG;
  const raw: Record<string, unknown> = file ? readYaml(file) : {};
  for (const key of Object.keys(configSchema.shape)) {
    const value = env[envName(key)];
    if (value === undefined || value === '') continue;
    raw[key] = LIST_KEYS.has(key) ? value.split(',').map((s) => s.trim()).filter(Boolean) : value;
  }
  const result = configSchema.safeParse(raw);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const key = issue.code === 'unrecognized_keys' ? issue.keys.join(', ') : issue.path.map(String).join('.');
    const where = issue.code === 'unrecognized_keys' ? 'unknown configuration key' : `${key} (${envName(key.split('.')[0]!)})`;
    const message = issue.code === 'unrecognized_keys' ? `${where}: ${key}` : `${where}: ${issue.message}`;
    throw new ConfigError(`invalid configuration: ${message}`, key);
  }
  return deepFreeze(result.data);
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
