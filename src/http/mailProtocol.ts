/**
 * nginx's mail proxy `auth_http` header protocol (ngx_mail_auth_http_module), as pure functions:
 * request headers in, answer headers out. The route (`routes/mail.ts`) adds the verifier.
 *
 * nginx sends `Auth-Method`, `Auth-User` and `Auth-Pass` (both percent-escaped: space, `%` and
 * control characters; other bytes, such as UTF-8, as they are), `Auth-Protocol`,
 * `Auth-Login-Attempt` and `Client-IP`.
 * It reads only the answer's headers, whatever the HTTP status: `Auth-Status: OK` with
 * `Auth-Server` (an IP address: nginx does not resolve names) and `Auth-Port`, or any other
 * `Auth-Status` text, which nginx hands to the client (IMAP `NO <text>`, POP3 `-ERR <text>`,
 * SMTP `<Auth-Error-Code> <text>`). With `Auth-Wait: n` it sends that text after n seconds and lets
 * the client try again on the same connection; without it (or with 0) it closes the connection.
 * nginx reads the answer into a 1 KiB buffer: the headers stay short and there is no body.
 */
import { isIP } from 'node:net';

export const MAIL_PROTOCOLS = ['imap', 'pop3', 'smtp'] as const;
export type MailProtocol = (typeof MAIL_PROTOCOLS)[number];

/** A login nginx asks about, decoded. */
export interface MailLogin {
  readonly protocol: MailProtocol;
  readonly username: string;
  readonly password: string;
  /** `Auth-Login-Attempt`: 1 for the first login on a connection. */
  readonly attempt: number;
  /** `Client-IP` when it is an IP address; believe it only from a trusted peer. */
  readonly clientIp: string | undefined;
}

/**
 * How the answer reads to the mail client:
 * - `ok`: nginx connects to `server` and logs in there (with `backendPassword` instead of the user's, when set);
 * - `invalid`: wrong credentials, missing scope, policy denial, malformed input — one text for all, so
 *   the client never learns which step failed or whether the user exists;
 * - `throttled`: `invalid` with `Auth-Wait` at least `retryAfterSeconds`;
 * - `unavailable`: no decision could be made (`retry: false` for a deployment fault retrying cannot fix);
 * - `method`: a mechanism whose password nginx cannot pass on in clear (APOP, CRAM-MD5, EXTERNAL);
 * - `auth_required`: SMTP without AUTH (`Auth-Method: none`).
 */
export type MailOutcome =
  | { readonly kind: 'ok'; readonly server: MailBackend; readonly backendPassword: string | undefined; readonly user: string }
  | { readonly kind: 'invalid' }
  | { readonly kind: 'throttled'; readonly retryAfterSeconds: number }
  | { readonly kind: 'unavailable'; readonly retry: boolean }
  | { readonly kind: 'method' }
  | { readonly kind: 'auth_required' };

/** A request that cannot be verified: the answer to give, and the stable reason and detail for logs and metrics. */
export interface MailRefusal {
  readonly protocol: MailProtocol | undefined;
  readonly attempt: number;
  readonly outcome: Exclude<MailOutcome, { kind: 'ok' }>;
  readonly reason: 'missing_credentials' | 'malformed_credentials';
  readonly message: string;
}

export interface MailBackend {
  /** An IP address, without brackets for IPv6 (nginx parses `Auth-Server` with `ngx_parse_addr`). */
  readonly host: string;
  readonly port: number;
}

export interface MailAnswerOptions {
  /** `mailMaxAttempts`: from this attempt on, no `Auth-Wait` (nginx closes the connection). */
  readonly maxAttempts: number;
  /** `mailWaitSeconds`: `Auth-Wait` after the first failure; doubles per attempt. */
  readonly waitSeconds: number;
  /** `mailSmtpErrorCode`: `Auth-Error-Code` for refused SMTP credentials. */
  readonly smtpErrorCode: string;
}

/** Longest `Auth-Wait` offered. A longer wait would hold the connection for nothing: the client is
 * told no (the connection closes) and is welcome to reconnect later. */
export const MAX_AUTH_WAIT_SECONDS = 300;

// Mechanisms that carry the password in clear to nginx. `login` is sent as `plain` by current nginx,
// by name by older ones. APOP and CRAM-MD5 send a digest keyed by a salt (`Auth-Salt`): an OAuth AS
// has no clear password to recompute it from.
const CLEAR_METHODS = new Set(['plain', 'login']);
const utf8 = new TextDecoder('utf-8', { fatal: true });
const HEX = /^[0-9A-Fa-f]{2}$/;

/**
 * `Auth-User`/`Auth-Pass` → the text the client typed. nginx percent-escapes some bytes
 * (ngx_escape_uri, NGX_ESCAPE_MAIL_AUTH) and sends the rest raw; Node hands header bytes over as
 * Latin-1, so the value is turned back into bytes, unescaped, and decoded as UTF-8 without
 * replacement characters.
 * Undefined for a broken escape or bytes that are not UTF-8.
 */
export function decodeAuthValue(value: string): string | undefined {
  const bytes = Buffer.from(value, 'latin1');
  const out = Buffer.allocUnsafe(bytes.length);
  let n = 0;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (b !== 0x25) {
      out[n++] = b;
      continue;
    }
    const hex = bytes.subarray(i + 1, i + 3).toString('latin1');
    if (!HEX.test(hex)) return undefined;
    out[n++] = Number.parseInt(hex, 16);
    i += 2;
  }
  try {
    return utf8.decode(out.subarray(0, n));
  } catch {
    return undefined;
  }
}

/**
 * `Auth-User` of an answer: nginx copies the value as it is (no unescaping) into the login it sends
 * the backend, so a UTF-8 name travels as its raw bytes (Node writes header strings as Latin-1, one
 * byte per character). Undefined for a name nginx cannot carry: empty, or holding a control character.
 */
export function authUserHeader(name: string): string | undefined {
  // eslint-disable-next-line no-control-regex
  if (name.length === 0 || /[\x00-\x1f\x7f]/.test(name)) return undefined;
  return Buffer.from(name, 'utf8').toString('latin1');
}

type Headers = Readonly<Record<string, readonly string[] | undefined>>;

/** Node's `rawHeaders` (`[name, value, name, value, …]`) → every value of each header, by lower-case name. */
export function headersByName(rawHeaders: readonly string[]): Headers {
  const headers: Record<string, string[]> = Object.create(null) as Record<string, string[]>;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) (headers[rawHeaders[i]!.toLowerCase()] ??= []).push(rawHeaders[i + 1]!);
  return headers;
}

/** The one value of a header; undefined when absent, `null` when sent more than once (nginx never does). */
function single(headers: Headers, name: string): string | undefined | null {
  const values = headers[name];
  if (values === undefined || values.length === 0) return undefined;
  return values.length === 1 ? values[0]! : null;
}

/** `Auth-Login-Attempt`; anything but a positive integer (not nginx talking) offers no retry. */
export function loginAttempt(value: string | undefined | null): number {
  return typeof value === 'string' && /^[1-9]\d{0,5}$/.test(value.trim()) ? Number(value.trim()) : Number.POSITIVE_INFINITY;
}

/**
 * nginx's request headers (`headersByName`: lower-case names, every value) →
 * a login to verify, or the refusal to answer at once. `check` applies credgate's shared rules for
 * a username/password pair (`checkPair`: no control characters, no colon in the username, sizes).
 */
export function parseMailRequest(headers: Headers, check: (username: string, password: string) => { message: string } | null): MailLogin | MailRefusal {
  const attempt = loginAttempt(single(headers, 'auth-login-attempt'));
  const rawProtocol = single(headers, 'auth-protocol');
  const protocol = MAIL_PROTOCOLS.find((p) => p === rawProtocol?.trim().toLowerCase());
  const refuse = (outcome: MailRefusal['outcome'], reason: MailRefusal['reason'], message: string): MailRefusal => ({ protocol, attempt, outcome, reason, message });
  if (protocol === undefined) return refuse({ kind: 'unavailable', retry: false }, 'malformed_credentials', 'Auth-Protocol is missing or not imap, pop3 or smtp');

  const method = single(headers, 'auth-method')?.trim().toLowerCase();
  if (method === 'none') return refuse({ kind: 'auth_required' }, 'missing_credentials', 'Auth-Method none (SMTP without AUTH): credgate authenticates logins only');
  if (method === undefined || method === null || !CLEAR_METHODS.has(method)) {
    return refuse({ kind: 'method' }, 'malformed_credentials', `Auth-Method ${method ?? '(missing)'} does not carry a clear password; configure nginx with ${protocol}_auth plain login`);
  }

  const rawUser = single(headers, 'auth-user');
  const rawPass = single(headers, 'auth-pass');
  if (rawUser === undefined || rawPass === undefined) return refuse({ kind: 'invalid' }, 'missing_credentials', 'no Auth-User or Auth-Pass');
  if (rawUser === null || rawPass === null) return refuse({ kind: 'invalid' }, 'malformed_credentials', 'Auth-User or Auth-Pass sent more than once');
  const username = decodeAuthValue(rawUser);
  const password = decodeAuthValue(rawPass);
  if (username === undefined || password === undefined) return refuse({ kind: 'invalid' }, 'malformed_credentials', 'Auth-User or Auth-Pass is not percent-encoded UTF-8');
  const problem = check(username, password);
  if (problem) return refuse({ kind: 'invalid' }, 'malformed_credentials', problem.message);

  const clientIp = single(headers, 'client-ip')?.trim();
  return { protocol, username, password, attempt, clientIp: clientIp && isIP(clientIp) !== 0 ? clientIp : undefined };
}

/**
 * `Auth-Wait` for a failed attempt, or undefined to make nginx close the connection: after
 * `maxAttempts`, or when the wait would exceed MAX_AUTH_WAIT_SECONDS. It doubles with each attempt
 * and is at least `atLeast` (the throttle's retry-after). Never 0: nginx reads 0 as "close".
 */
export function authWait(attempt: number, options: Pick<MailAnswerOptions, 'maxAttempts' | 'waitSeconds'>, atLeast = 0): number | undefined {
  if (!(attempt < options.maxAttempts)) return undefined;
  const wait = Math.max(1, options.waitSeconds * 2 ** (attempt - 1), Math.ceil(atLeast));
  return wait <= MAX_AUTH_WAIT_SECONDS ? wait : undefined;
}

const TEXT = {
  invalid: 'Invalid login or password',
  unavailable: 'Temporary server problem, try again later',
  method: 'Authentication mechanism not supported',
  auth_required: 'Authentication required',
} as const;

// Machine-readable response codes clients act on: IMAP RFC 5530 §3, POP3 RFC 3206 §4 (RESP-CODES).
const IMAP_CODE: Partial<Record<keyof typeof TEXT, string>> = { invalid: '[AUTHENTICATIONFAILED] ', unavailable: '[UNAVAILABLE] ' };
const POP3_CODE: Partial<Record<keyof typeof TEXT, string>> = { invalid: '[AUTH] ', unavailable: '[SYS/TEMP] ' };
// SMTP reply and enhanced status codes: RFC 4954 §6 (AUTH), RFC 3463.
const SMTP_CODE = { unavailable: '454 4.7.0', method: '504 5.5.4', auth_required: '530 5.7.0' } as const;

/** The answer headers for an outcome (`protocol` undefined: nginx sent none we know; IMAP wording is harmless). */
export function renderMailAnswer(protocol: MailProtocol | undefined, attempt: number, outcome: MailOutcome, options: MailAnswerOptions): Record<string, string> {
  if (outcome.kind === 'ok') {
    // Auth-User: the account nginx logs in to the backend as (and passes in XCLIENT LOGIN for SMTP),
    // already in header form (authUserHeader).
    const headers: Record<string, string> = { 'Auth-Status': 'OK', 'Auth-Server': outcome.server.host, 'Auth-Port': String(outcome.server.port), 'Auth-User': outcome.user };
    if (outcome.backendPassword !== undefined) headers['Auth-Pass'] = outcome.backendPassword;
    return headers;
  }
  const kind = outcome.kind === 'throttled' ? 'invalid' : outcome.kind;
  const code = protocol === 'pop3' ? POP3_CODE[kind] : protocol === 'smtp' ? undefined : IMAP_CODE[kind];
  const headers: Record<string, string> = { 'Auth-Status': (code ?? '') + TEXT[kind] };
  const wait = outcome.kind === 'unavailable' && !outcome.retry ? undefined : authWait(attempt, options, outcome.kind === 'throttled' ? outcome.retryAfterSeconds : 0);
  if (wait !== undefined) headers['Auth-Wait'] = String(wait);
  if (protocol === 'smtp') headers['Auth-Error-Code'] = kind === 'invalid' ? options.smtpErrorCode : SMTP_CODE[kind];
  return headers;
}

/** `mailImapBackend` etc. (`127.0.0.1:143`, `[::1]:143`) → host and port for `Auth-Server`/`Auth-Port`. */
export function parseBackend(value: string): MailBackend {
  const colon = value.lastIndexOf(':');
  return { host: value.slice(0, colon).replace(/^\[(.*)\]$/, '$1'), port: Number(value.slice(colon + 1)) };
}
