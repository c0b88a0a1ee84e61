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

/** Granted scopes of a token: `scope` (string, RFC 8693/9068), `scp` (array, Okta/Azure) and Auth0's RBAC `permissions`. */
export function scopesOf(claims: JWTPayload | Record<string, unknown>): string[] {
  return [...new Set([...splitScope(claims.scope), ...stringArray(claims.scp), ...stringArray(claims.permissions)])];
}

/** Scopes the request needs that the identity was not granted (exact match). */
export function missingScopes(required: readonly string[], granted: readonly string[]): string[] {
  const have = new Set(granted);
  return required.filter((s) => !have.has(s));
}
