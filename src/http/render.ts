import type { Decision } from '../verify/types.js';

/**
 * Header values outside printable ASCII (a UTF-8 username) are percent-encoded as UTF-8, and so
 * is `%` itself, so that the upstream can decode every value unambiguously (SPEC "HTTP interfaces").
 */
export function headerValue(value: string): string {
  return value.replace(/[^\x20-\x24\x26-\x7e]/gu, (c) => encodeURIComponent(c));
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
