import type { Deadline } from '../upstream/deadline.js';
import type { Credentials, Identity } from './types.js';

/**
 * One way of proving a credential. `null` means "not mine, or not valid"; a thrown UpstreamError
 * means "could not ask". Any other exception is a bug and is treated like "could not ask".
 */
export interface StrategyContext {
  readonly audience: string;
  /** The end user's IP, only when it is known to be theirs (never a proxy's address). */
  readonly endUserIp: string | undefined;
  /** The decision's deadline, handed to every call to the AS (absent outside a decision). */
  readonly deadline?: Deadline;
}

export interface Strategy {
  readonly name: 'password_grant' | 'app_password' | 'token';
  authenticate(credentials: Credentials, context: StrategyContext): Promise<Identity | null>;
}

/** Compact JWS shape (RFC 7515 §7.1) whose header is a JSON object naming an `alg`. */
export function looksLikeJwt(value: string): boolean {
  if (value.length > 16_384 || !/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(value)) return false;
  try {
    const header: unknown = JSON.parse(Buffer.from(value.slice(0, value.indexOf('.')), 'base64url').toString('utf8'));
    return typeof header === 'object' && header !== null && typeof (header as { alg?: unknown }).alg === 'string';
  } catch {
    return false;
  }
}

/** Usernames compare after Unicode NFC normalisation and case folding: authorization servers
 * (Auth0 among them) treat `Alice@Example.com` and `alice@example.com` as one account. */
export function normaliseUsername(username: string): string {
  return username.normalize('NFC').toLowerCase();
}

export function sameUsername(a: string, b: string): boolean {
  return normaliseUsername(a) === normaliseUsername(b);
}

/** The first of `claims` present as a string in `source` (SPEC: "first present wins"). */
export function usernameFrom(source: Record<string, unknown>, claims: readonly string[]): string | undefined {
  for (const claim of claims) {
    const value = source[claim];
    if (value !== undefined) return typeof value === 'string' && value.length > 0 ? value : undefined;
  }
  return undefined;
}
