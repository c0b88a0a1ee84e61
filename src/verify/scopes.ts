import type { JWTPayload } from 'jose';

/** RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ). */
export const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;

/** Splits a space-delimited scope string (RFC 6749 §3.3), dropping anything that is not a scope-token. */
export function splitScope(value: unknown): string[] {
  if (typeof value !== 'string') return [];
  return value.split(' ').filter((s) => SCOPE_TOKEN.test(s));
}

function stringArray(value: unknown): string[] {
  if (typeof value === 'string') return splitScope(value);
  return Array.isArray(value) ? value.filter((s): s is string => typeof s === 'string' && SCOPE_TOKEN.test(s)) : [];
}

/** Claims a token's granted scopes may be read from (`scopeClaims`). */
export const SCOPE_CLAIMS = ['scope', 'scp', 'permissions'] as const;
export type ScopeClaim = (typeof SCOPE_CLAIMS)[number];
/** The default: what the token was narrowed to. Auth0's `permissions` lists every permission the user
 * holds whatever scope was requested, so a token issued for `read:repo` would pass a `write:repo` rule. */
export const DEFAULT_SCOPE_CLAIMS: readonly ScopeClaim[] = ['scope', 'scp'];

/**
 * Granted scopes of a token, from the configured claims only: `scope` (space-separated string,
 * RFC 8693 §4.2, RFC 9068 §2.2.3), `scp` (array, Okta/Azure), and Auth0's RBAC `permissions` only
 * when the operator opted in.
 */
export function scopesOf(claims: JWTPayload | Record<string, unknown>, from: readonly ScopeClaim[] = DEFAULT_SCOPE_CLAIMS): string[] {
  const scopes = new Set<string>();
  for (const claim of from) for (const s of claim === 'scope' ? splitScope(claims.scope) : stringArray(claims[claim])) scopes.add(s);
  return [...scopes];
}

/**
 * How a granted scope satisfies a required one (the names Ory Oathkeeper uses):
 * - `exact`: only the same string;
 * - `hierarchic`: a granted scope also covers everything below it, segments split on `:`
 *   (`repo` grants `repo:read` and `repo:read:issues`, not `repository`);
 * - `wildcard`: a granted `*` segment stands for any one segment, and a trailing `*` for one or
 *   more (`repo:*` grants `repo:read`; `*:repo` grants `read:repo` and `write:repo`).
 * The strategy applies to what the token grants; required scopes are always taken literally.
 */
export const SCOPE_STRATEGIES = ['exact', 'hierarchic', 'wildcard'] as const;
export type ScopeStrategy = (typeof SCOPE_STRATEGIES)[number];

function grantsHierarchic(granted: string, required: string): boolean {
  return required === granted || required.startsWith(granted + ':');
}

function grantsWildcard(granted: string, required: string): boolean {
  if (granted === required) return true;
  if (!granted.includes('*')) return false;
  const g = granted.split(':');
  const r = required.split(':');
  for (let i = 0; i < g.length; i++) {
    const segment = g[i]!;
    const last = i === g.length - 1;
    if (segment === '*' && last) return r.length > i; // one or more remaining segments
    if (i >= r.length) return false;
    if (segment !== '*' && segment !== r[i]) return false;
  }
  return g.length === r.length;
}

/** Scopes the request needs that the identity was not granted, under the given strategy (default exact). */
export function missingScopes(required: readonly string[], granted: readonly string[], strategy: ScopeStrategy = 'exact'): string[] {
  if (required.length === 0) return [];
  if (strategy === 'exact') {
    const have = new Set(granted);
    return required.filter((s) => !have.has(s));
  }
  const grants = strategy === 'hierarchic' ? grantsHierarchic : grantsWildcard;
  return required.filter((r) => !granted.some((g) => grants(g, r)));
}
