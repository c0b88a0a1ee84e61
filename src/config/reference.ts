/**
 * The configuration reference (docs/configuration.md), rendered from the schema itself: every key of
 * `configSchema`, its environment variable (`envName`), its type and default read off the zod
 * definition, and its `description`. `npm run docs` writes the file; a unit test fails when the
 * committed file differs from what this renders, so the reference cannot drift from the code.
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { z } from 'zod';
import { envName } from './load.js';
import { configSchema } from './schema.js';

/** Where `npm run docs` writes the reference: docs/configuration.md at the repository root. */
export const REFERENCE_FILE = fileURLToPath(new URL('../../../docs/configuration.md', import.meta.url));

/** What the renderer reads of a field's metadata (`.describe()` / `.meta()` in schema.ts). */
interface FieldMeta {
  readonly description?: string;
  /** A default the schema cannot show (computed at start-up, or applied outside the schema). */
  readonly defaultText?: string;
  /** For an optional key that a mode or another key makes necessary: "by `credgate serve`". */
  readonly requiredWhen?: string;
}

/** The parts of a zod definition the renderer looks at (zod 4 `_zod.def`). */
interface Def {
  readonly type: string;
  readonly innerType?: Schema;
  readonly in?: Schema;
  readonly element?: Schema;
  readonly options?: readonly Schema[];
  readonly entries?: Record<string, string | number>;
  readonly values?: readonly unknown[];
  readonly format?: string;
  readonly defaultValue?: unknown;
  readonly checks?: readonly { readonly _zod: { readonly def: Check } }[];
}
interface Check {
  readonly check: string;
  readonly format?: string;
  readonly value?: number;
  readonly inclusive?: boolean;
  readonly minimum?: number;
  readonly maximum?: number;
}
type Schema = { readonly _zod: { readonly def: Def } };

export interface ConfigField {
  readonly key: string;
  readonly env: string;
  readonly type: string;
  readonly default: string;
  readonly description: string;
}

const checksOf = (def: Def): Check[] => (def.checks ?? []).map((c) => c._zod.def);

/** `a`, `b` or `c`. */
function oneOf(values: readonly unknown[]): string {
  const shown = [...new Set(values.map((v) => `\`${String(v)}\``))];
  return shown.length <= 2 ? shown.join(' or ') : `${shown.slice(0, -1).join(', ')} or ${shown.at(-1)}`;
}

/** Literal values a schema accepts, or undefined when it accepts more than a fixed set. */
function literals(schema: Schema): unknown[] | undefined {
  const def = schema._zod.def;
  if (def.type === 'literal') return [...(def.values ?? [])];
  if (def.type === 'enum') return Object.values(def.entries ?? {});
  if (def.type === 'pipe' && def.in) return literals(def.in);
  if (def.type === 'union') {
    const all = (def.options ?? []).map(literals);
    return all.every((v) => v !== undefined) ? all.flat() : undefined;
  }
  return undefined;
}

/** `z.stringbool()` (a pipe from a string) or a boolean. */
function isBooleanLike(schema: Schema): boolean {
  const def = schema._zod.def;
  if (def.type === 'boolean') return true;
  if (def.type === 'pipe') return def.in?._zod.def.type === 'string';
  if (def.type === 'union') return (def.options ?? []).every(isBooleanLike);
  return false;
}

function range(low: number | undefined, high: number | undefined, unit = ''): string {
  if (low !== undefined && high !== undefined) return `${low}–${high}${unit}`;
  if (low !== undefined) return `≥ ${low}${unit}`;
  if (high !== undefined) return `≤ ${high}${unit}`;
  return '';
}

/** A human-readable type, with the bounds the schema enforces. */
export function typeOf(schema: Schema): string {
  const def = schema._zod.def;
  const checks = checksOf(def);
  switch (def.type) {
    case 'optional':
    case 'default':
      return typeOf(def.innerType!);
    case 'number': {
      const integer = checks.some((c) => c.check === 'number_format' && (c.format === 'safeint' || c.format === 'int32'));
      const low = checks.find((c) => c.check === 'greater_than' && c.inclusive)?.value;
      const high = checks.find((c) => c.check === 'less_than' && c.inclusive)?.value;
      const bounds = range(low, high);
      return (integer ? 'integer' : 'number') + (bounds ? `, ${bounds}` : '');
    }
    case 'string': {
      if (def.format === 'url') return 'URL';
      const low = checks.find((c) => c.check === 'min_length')?.minimum;
      const high = checks.find((c) => c.check === 'max_length')?.maximum;
      const bounds = range(low === 1 && high === undefined ? undefined : low, high, ' characters');
      return 'string' + (bounds ? `, ${bounds}` : '');
    }
    case 'array': {
      const element = def.element!;
      const values = literals(element);
      const nonEmpty = checks.some((c) => c.check === 'min_length' && (c.minimum ?? 0) >= 1);
      const each = typeOf(element);
      const of = values !== undefined ? `of ${oneOf(values)}` : each === 'string' ? 'of strings' : `, each a ${each}`;
      return `${nonEmpty ? 'non-empty ' : ''}list${of.startsWith(',') ? '' : ' '}${of}`;
    }
    default: {
      if (isBooleanLike(schema)) return 'boolean';
      const values = literals(schema);
      if (values !== undefined) return oneOf(values);
      return def.type;
    }
  }
}

/** A default as one would write it: lists comma-separated (as the environment takes them). */
function shownValue(key: string, value: unknown): string {
  if (Array.isArray(value)) return value.length === 0 ? 'none' : `\`${value.join(',')}\``;
  if (typeof value === 'number' && key.endsWith('Seconds') && value >= 86_400 && value % 86_400 === 0) return `\`${value}\` (${value / 86_400} days)`;
  return `\`${String(value)}\``;
}

function defaultOf(key: string, schema: Schema, meta: FieldMeta): string {
  if (meta.defaultText !== undefined) return meta.defaultText;
  const def = schema._zod.def;
  if (def.type === 'default') return shownValue(key, def.defaultValue);
  if (meta.requiredWhen !== undefined) return `required ${meta.requiredWhen}`;
  return '—';
}

/** Every configuration key, in schema order. Throws if a key has no description. */
export function configFields(): ConfigField[] {
  return Object.entries(configSchema.shape).map(([key, field]) => {
    const meta = ((field as z.ZodType).meta() ?? {}) as FieldMeta;
    if (!meta.description) throw new Error(`configuration key ${key} has no description in src/config/schema.ts`);
    const schema = field as unknown as Schema;
    return { key, env: envName(key), type: typeOf(schema), default: defaultOf(key, schema, meta), description: meta.description };
  });
}

const cell = (text: string) => text.replace(/\|/g, '\\|');

/** docs/configuration.md. */
export function renderConfigurationReference(): string {
  const rows = configFields().map((f) => `| \`${f.key}\` | \`${f.env}\` | ${cell(f.type)} | ${cell(f.default)} | ${cell(f.description)} |`);
  return [
    '# Configuration reference',
    '',
    '<!-- Generated from src/config/schema.ts by `npm run docs`. Do not edit by hand: change the',
    "     key's description in the schema and run `npm run docs` (a unit test compares the two). -->",
    '',
    'credgate reads a YAML file (`--config FILE` or `CREDGATE_CONFIG`) with the keys below, each also',
    'settable by its environment variable; the environment wins over the file. Lists are',
    'comma-separated in the environment. Invalid configuration stops start-up with a message naming the',
    'key and its variable, e.g. `invalid configuration: port (PORT): Too big: expected number to be <=65535`.',
    '',
    '`credgate serve` needs `issuer`, `audience`, `clientId`, `clientSecret`, and `introspectionKeyFile`',
    'or `introspectionClientSecret`; `credgate dev` needs none of them. In the default column, — means',
    'unset. Secrets (`clientSecret`, `introspectionClientSecret`, `cacheKeySecret`, `adminToken`,',
    '`mailBackendPassword`, `redisUrl`, `redisPassword`, `redisSentinelPassword`) are never logged.',
    '',
    '| key | environment | type | default | description |',
    '| --- | --- | --- | --- | --- |',
    ...rows,
    '',
  ].join('\n');
}

// `node dist/src/config/reference.js` (npm run docs) writes the file.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  writeFileSync(REFERENCE_FILE, renderConfigurationReference());
  process.stdout.write(`wrote ${REFERENCE_FILE}\n`);
}
