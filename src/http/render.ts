import type { Decision, Identity } from '../verify/types.js';

const NEEDS_ENCODING = /[^\x20-\x24\x26-\x7e]/u;

/**
 * Header values outside printable ASCII (a UTF-8 username) are percent-encoded as UTF-8, and so
 * is `%` itself, so that the upstream can decode every value unambiguously (SPEC "HTTP interfaces").
 */
export function headerValue(value: string): string {
  return NEEDS_ENCODING.test(value) ? value.replace(/[^\x20-\x24\x26-\x7e]/gu, (c) => encodeURIComponent(c)) : value;
}

/** The identity headers of an allow on `/auth` (SPEC: X-Auth-Subject, -User, -Scopes, -Credential). */
export type IdentityHeaders = Readonly<Record<'x-auth-subject' | 'x-auth-scopes' | 'x-auth-credential', string> & { 'x-auth-user'?: string }>;

/** Rendered once per identity object: a cached identity answers many requests with the same headers. */
const rendered = new WeakMap<Identity, IdentityHeaders>();

export function identityHeaders(id: Identity): IdentityHeaders {
  let headers = rendered.get(id);
  if (headers === undefined) {
    headers = Object.freeze({
      'x-auth-subject': headerValue(id.subject),
      ...(id.username !== undefined ? { 'x-auth-user': headerValue(id.username) } : {}),
      'x-auth-scopes': headerValue(id.scopes.join(' ')),
      'x-auth-credential': id.credential,
    });
    rendered.set(id, headers);
  }
  return headers;
}

/** The body of every allow on `/auth` (docs/contract.md), serialised once. */
export const ALLOW_BODY = JSON.stringify({ reason: 'ok' });
const ALLOW_LENGTH = String(Buffer.byteLength(ALLOW_BODY));
export const JSON_TYPE = 'application/json; charset=utf-8';

/** Every header of an allow on `/auth`, in the order they are sent: the identity's, then `Cache-Control`, type and length. */
export type AllowHeaders = Readonly<Record<string, string>>;
const allowRendered = new WeakMap<Identity, AllowHeaders>();

/**
 * The whole header block of an allow on `/auth` (without an identity token), made once per identity
 * object, so that a cached decision's answer is one `writeHead` with a ready object.
 */
export function allowHeaders(id: Identity): AllowHeaders {
  let headers = allowRendered.get(id);
  if (headers === undefined) {
    headers = Object.freeze({ ...identityHeaders(id), 'cache-control': 'no-store', 'content-type': JSON_TYPE, 'content-length': ALLOW_LENGTH });
    allowRendered.set(id, headers);
  }
  return headers;
}

/** Serialised allows of `POST /v1/verify`, per identity object: [not cached, cached]. */
const allowJsonRendered = new WeakMap<Identity, [string | undefined, string | undefined]>();

/**
 * The JSON decision of `POST /v1/verify` as the bytes sent: `JSON.stringify(decisionJson(decision))`.
 * An allow without an identity token is the same text for every request that a cached identity
 * answers, so it is serialised once per identity object (and cached flag).
 */
export function decisionText(decision: Decision): string {
  const id = decision.identity;
  if (!decision.allow || id === undefined || decision.identityToken !== undefined || decision.status !== 200 || decision.reason !== 'ok') return JSON.stringify(decisionJson(decision));
  let texts = allowJsonRendered.get(id);
  if (texts === undefined) allowJsonRendered.set(id, (texts = [undefined, undefined]));
  const slot = decision.cached ? 1 : 0;
  return (texts[slot] ??= JSON.stringify(decisionJson(decision)));
}

/** The JSON decision of `POST /v1/verify` (SPEC). Denials carry no identity. */
export function decisionJson(decision: Decision): Record<string, unknown> {
  const id = decision.identity;
  if (decision.allow && id) {
    return {
      allow: true,
      status: decision.status,
      reason: decision.reason,
      subject: id.subject,
      username: id.username,
      credential: id.credential,
      scopes: id.scopes,
      audience: id.audience,
      expiresAt: id.expiresAt !== undefined ? new Date(id.expiresAt * 1000).toISOString().replace('.000Z', 'Z') : undefined,
      cached: decision.cached,
      identityToken: decision.identityToken?.value,
    };
  }
  return {
    allow: false,
    status: decision.status,
    reason: decision.reason,
    missingScopes: decision.missingScopes,
    retryAfterSeconds: decision.retryAfterSeconds,
    cached: decision.cached,
  };
}
