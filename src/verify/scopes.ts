import type { JWTPayload } from 'jose';

import { DEFAULT_SCOPE_CLAIMS, SCOPE_TOKEN, type ScopeClaim, type ScopeStrategy } from '../vocabulary.js';

export { DEFAULT_SCOPE_CLAIMS, SCOPE_CLAIMS, SCOPE_STRATEGIES, SCOPE_TOKEN, type ScopeClaim, type ScopeStrategy } from '../vocabulary.js';

/** Splits a space-delimited scope string (RFC 6749 §3.3), dropping anything that is not a scope-token. */
export function splitScope(value: unknown): string[] {
  if (typeof value !== 'string') return [];
  return value.split(' ').filter((s) => SCOPE_TOKEN.test(s));
}

function stringArray(value: unknown): string[] {
  if (typeof value === 'string') return splitScope(value);
  return Array.isArray(value) ? value.filter((s): s is string => typeof s === 'string' && SCOPE_TOKEN.test(s)) : [];
}

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
