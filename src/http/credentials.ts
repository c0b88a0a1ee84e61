import type { CredentialsProblem } from '../decide/pipeline.js';
import type { Credentials } from '../verify/types.js';

export type { CredentialsProblem } from '../decide/pipeline.js';

export const MAX_USERNAME_BYTES = 1024;
export const MAX_PASSWORD_BYTES = 4096;
export const MAX_TOKEN_BYTES = 16_384;

// RFC 7617 §2: "The user-id and password MUST NOT contain any control characters".
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
// RFC 4648 §4 base64, canonical padding (a lenient decoder would accept garbage).
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
// RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
// Unpaired UTF-16 surrogates (only reachable through JSON "\ud800" escapes) cannot be sent on as UTF-8.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const SURROGATE = /[\uD800-\uDFFF]/;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Rules one value of a credential pair must meet (RFC 7617 §2: no control characters). */
function checkValue(what: 'username' | 'password', value: string, maxBytes: number): string | null {
  if (value.length === 0) return `${what} is empty`;
  // A UTF-16 unit is at most 3 bytes of UTF-8: short values need no count.
  if (value.length * 3 > maxBytes && Buffer.byteLength(value) > maxBytes) return `${what} longer than ${maxBytes} bytes`;
  if (CONTROL.test(value)) return `${what} contains control characters`;
  if (SURROGATE.test(value) && LONE_SURROGATE.test(value)) return `${what} is not valid Unicode`;
  return null;
}

/**
 * Checks a username given alone (admin purge). Colons are allowed: an identity's username comes
 * from the AS and may hold one, and purging it must still be possible.
 */
export function checkUsername(username: string): string | null {
  return checkValue('username', username, MAX_USERNAME_BYTES);
}

/** Checks a username/password pair from any interface (Basic, JSON, mail). */
export function checkPair(username: string, password: string): CredentialsProblem | null {
  const problem =
    checkUsername(username) ??
    (username.includes(':') ? 'username contains a colon' : null) ??
    checkValue('password', password, MAX_PASSWORD_BYTES);
  return problem === null ? null : { reason: 'malformed_credentials', message: problem };
}

/**
 * The token of a well-formed `Bearer <b64token>` header (any case of "Bearer", spaces around the
 * token), found without the general pattern's capture over the whole ~1 KB header: every cached
 * Bearer decision parses one. Exactly the headers the general path below accepts as Bearer, with
 * the same token (a property test holds the two together); undefined for anything else, which the
 * general path then parses (and refuses with its reason).
 */
function wellFormedBearer(header: string): string | undefined {
  if (header.charCodeAt(6) !== 0x20 || header.slice(0, 6).toLowerCase() !== 'bearer') return undefined;
  let start = 7;
  while (header.charCodeAt(start) === 0x20) start++;
  let end = header.length;
  while (end > start && header.charCodeAt(end - 1) === 0x20) end--;
  if (end === start || end - start > MAX_TOKEN_BYTES) return undefined;
  const token = header.slice(start, end);
  return B64TOKEN.test(token) ? token : undefined;
}

/**
 * Parses `Authorization: Basic` (RFC 7617) and `Authorization: Bearer` (RFC 6750). Strict where
 * lenient parsers guess: canonical base64, UTF-8 that decodes without replacement characters
 * (RFC 7617 §2.1 charset="UTF-8"), the first colon splits user-id from password (so the password
 * may hold colons), no control characters.
 */
export function parseAuthorization(header: string | string[] | undefined): Credentials | CredentialsProblem {
  if (header === undefined || header === '') return { reason: 'missing_credentials', message: 'no Authorization header' };
  if (Array.isArray(header)) return { reason: 'malformed_credentials', message: 'more than one Authorization header' };
  const bearer = wellFormedBearer(header);
  if (bearer !== undefined) return { kind: 'bearer', token: bearer };
  const match = /^([A-Za-z]+) +(\S+) *$/.exec(header);
  if (!match) return { reason: 'malformed_credentials', message: 'Authorization header is not "<scheme> <credentials>"' };
  const scheme = match[1]!.toLowerCase();
  const value = match[2]!;
  if (scheme === 'bearer') {
    if (value.length > MAX_TOKEN_BYTES) return { reason: 'malformed_credentials', message: 'bearer token too long' };
    if (!B64TOKEN.test(value)) return { reason: 'malformed_credentials', message: 'bearer token has characters outside RFC 6750 b64token' };
    return { kind: 'bearer', token: value };
  }
  if (scheme !== 'basic') return { reason: 'malformed_credentials', message: `unsupported authorization scheme` };
  if (value.length > 2 * (MAX_USERNAME_BYTES + MAX_PASSWORD_BYTES)) return { reason: 'malformed_credentials', message: 'Basic credentials too long' };
  if (!BASE64.test(value)) return { reason: 'malformed_credentials', message: 'Basic credentials are not valid base64' };
  const bytes = Buffer.from(value, 'base64');
  if (!isAscii(bytes)) {
    try {
      utf8.decode(bytes);
    } catch {
      return { reason: 'malformed_credentials', message: 'Basic credentials are not valid UTF-8' };
    }
  }
  // The first colon (0x3a never occurs inside a multi-byte UTF-8 sequence). Username and password
  // are decoded apart rather than sliced from one string: a slice of "user:password" keeps the
  // whole string alive, and the username outlives the request (cache, throttle), the password must not.
  const colon = bytes.indexOf(0x3a);
  if (colon < 0) return { reason: 'malformed_credentials', message: 'Basic credentials have no colon between username and password' };
  const username = bytes.toString('utf8', 0, colon);
  const password = bytes.toString('utf8', colon + 1);
  const problem = checkPair(username, password);
  return problem ?? { kind: 'basic', username, password };
}

/**
 * Every `Authorization` header of a request, from Node's `rawHeaders`: a string for one, an array
 * for several. Node's `request.headers` silently keeps only the first of a repeated
 * `Authorization`, while a proxy or the application behind it may take another, so credgate could
 * approve one credential while the upstream acts on a different one (a Basic pair for alice, a
 * Bearer token for someone else). RFC 9110 §5.3 forbids repeating a field that is not a list:
 * `parseAuthorization` refuses an array.
 */
export function authorizationHeaders(rawHeaders: readonly string[]): string | string[] | undefined {
  let found: string | string[] | undefined;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.length !== 13 || rawHeaders[i]!.toLowerCase() !== 'authorization') continue;
    const value = rawHeaders[i + 1]!;
    found = found === undefined ? value : Array.isArray(found) ? [...found, value] : [found, value];
  }
  return found;
}

/** ASCII is valid UTF-8: most credentials need no decoder pass. */
function isAscii(bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.length; i++) if (bytes[i]! >= 0x80) return false;
  return true;
}

export function isProblem(value: Credentials | CredentialsProblem): value is CredentialsProblem {
  return 'reason' in value;
}
