import { isIP } from 'node:net';
import type { FastifyRequest } from 'fastify';
import proxyAddr from 'proxy-addr';
import type { TrustedProxies } from '../decide/trust.js';

/** What an HTTP request says about the request it asks about, as far as credgate may believe it. */
export interface OriginalRequest {
  /** The direct peer's address (IPv4-mapped IPv6 unwrapped). */
  readonly peer: string;
  /** Whether the direct peer is a configured trusted proxy (and its forwarded headers were read). */
  readonly trusted: boolean;
  /** Method, host and raw target (path and query exactly as sent); undefined fields are unknown. */
  readonly original: { readonly method?: string; readonly host?: string; readonly target?: string };
  /** The end user's address as the trusted proxy reports it (X-Forwarded-For walked past trusted hops, or X-Real-IP). */
  readonly reportedClientIp: string | undefined;
  /** A forwarded header that came twice, or two header families that disagree. */
  readonly ambiguous: string | undefined;
}

const ORIGINAL_HEADERS = ['x-original-method', 'x-original-uri', 'x-forwarded-method', 'x-forwarded-uri', 'x-forwarded-host', 'x-original-host', 'x-real-ip'] as const;

/** Pairs that name the same thing; a trusted proxy that sends both must send the same value. */
const CONFLICTING: ReadonlyArray<readonly [(typeof ORIGINAL_HEADERS)[number], (typeof ORIGINAL_HEADERS)[number]]> = [
  ['x-original-method', 'x-forwarded-method'],
  ['x-original-uri', 'x-forwarded-uri'],
  ['x-original-host', 'x-forwarded-host'],
];

const WATCHED: ReadonlySet<string> = new Set([...ORIGINAL_HEADERS, 'x-forwarded-for', 'host']);
/** Lengths of the watched names: a header of another length is not lower-cased to be looked up. */
const WATCHED_LENGTHS: ReadonlySet<number> = new Set([...WATCHED].map((name) => name.length));

/** Each watched header with every line it came in, so that a duplicated one can be told apart from a joined one. */
function distinctHeaders(request: FastifyRequest): Partial<Record<string, string[]>> {
  const out: Partial<Record<string, string[]>> = {};
  const raw = request.raw.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (!WATCHED_LENGTHS.has(raw[i]!.length)) continue;
    const name = raw[i]!.toLowerCase();
    if (WATCHED.has(name)) (out[name] ??= []).push(raw[i + 1]!);
  }
  return out;
}

/** `::ffff:10.0.0.1` → `10.0.0.1`. */
export function plainIp(address: string): string {
  return address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}

/**
 * The original request. `envoyTarget` is the raw request-target after the `/auth` prefix (Envoy's
 * ext_authz `path_prefix`), used when no `X-Original-URI`/`X-Forwarded-Uri` is sent. Nothing here
 * decodes the target: the decision pipeline parses it once (policy/target.ts).
 */
export function readOriginalRequest(trust: TrustedProxies, request: FastifyRequest, envoyTarget?: string): OriginalRequest {
  const peer = plainIp(request.socket.remoteAddress ?? '');
  const headers = distinctHeaders(request);
  if (!trust.isTrusted(peer)) {
    if (ORIGINAL_HEADERS.some((h) => headers[h] !== undefined) || headers['x-forwarded-for'] !== undefined) trust.warnUntrusted(peer);
    return { peer, trusted: false, original: {}, reportedClientIp: undefined, ambiguous: undefined };
  }
  const one = (name: (typeof ORIGINAL_HEADERS)[number]) => headers[name]?.[0];
  // A header sent twice, or the nginx-style and the Traefik/Caddy-style header disagreeing: the
  // proxy set one family and passed the client's copy of the other through. Believing either
  // could turn a push into a fetch, so the request is ambiguous (and denied).
  const ambiguous =
    ORIGINAL_HEADERS.find((h) => (headers[h]?.length ?? 0) > 1) ??
    CONFLICTING.find(([a, b]) => one(a) !== undefined && one(b) !== undefined && one(a) !== one(b))?.join(' and ');
  let reportedClientIp: string | undefined;
  if (headers['x-forwarded-for'] !== undefined) {
    const address = plainIp(proxyAddr(request.raw, trust.isTrustedHop));
    reportedClientIp = isIP(address) !== 0 ? address : undefined;
  } else {
    const realIp = one('x-real-ip')?.trim();
    reportedClientIp = realIp !== undefined && isIP(realIp) !== 0 ? plainIp(realIp) : undefined;
  }
  return {
    peer,
    trusted: true,
    original: {
      method: one('x-original-method') ?? one('x-forwarded-method') ?? (envoyTarget !== undefined ? request.method : undefined),
      host: one('x-forwarded-host') ?? one('x-original-host') ?? headers.host?.[0],
      target: one('x-original-uri') ?? one('x-forwarded-uri') ?? envoyTarget,
    },
    reportedClientIp,
    ambiguous: ambiguous === undefined ? undefined : `the trusted proxy sent ${ambiguous} twice or with different values (it must set or strip the client's copies)`,
  };
}

/** Whether the direct peer of `request` is a configured trusted proxy. */
export function isTrustedPeer(trust: TrustedProxies, request: FastifyRequest): boolean {
  return trust.isTrusted(plainIp(request.socket.remoteAddress ?? ''));
}
