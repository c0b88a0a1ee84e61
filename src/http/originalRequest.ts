import { isIP } from 'node:net';
import type { FastifyRequest } from 'fastify';
import proxyAddr from 'proxy-addr';
import type { Logger } from '../log.js';

/** The request the proxy is asking about, as far as credgate may believe it. */
export interface OriginalRequest {
  /** Whether the direct peer is a configured trusted proxy (and its forwarded headers were read). */
  readonly trusted: boolean;
  /** Undefined when unknown: rules that look at it do not match. */
  readonly method: string | undefined;
  readonly host: string | undefined;
  /** Path and query, as the client sent them. */
  readonly uri: string | undefined;
  /** For logs: the end user's IP when known, else the direct peer. */
  readonly clientIp: string;
  /** The end user's own IP, only when credgate can tell (see RequestContext.endUserIp). */
  readonly endUserIp: string | undefined;
  /** A forwarded header that came twice: the proxy appended instead of replacing a client's copy. */
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

/** Each watched header with every line it came in, so that a duplicated one can be told apart from a joined one. */
function distinctHeaders(request: FastifyRequest): Partial<Record<string, string[]>> {
  const out: Partial<Record<string, string[]>> = {};
  const raw = request.raw.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (WATCHED.has(name)) (out[name] ??= []).push(raw[i + 1]!);
  }
  return out;
}

/** `::ffff:10.0.0.1` → `10.0.0.1`. */
function plainIp(address: string): string {
  return address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}

/**
 * Trusted proxies (`trustedProxies`): the only peers whose `X-Original-*`, `X-Forwarded-*` and
 * `X-Real-IP` are believed. `X-Forwarded-For` is walked from the right past trusted hops
 * (proxy-addr), so a client cannot plant an address by sending its own header.
 */
export class TrustedProxies {
  readonly #trust: (address: string, index: number) => boolean;
  readonly configured: boolean;
  #lastWarning = 0;

  constructor(
    list: readonly string[],
    private readonly log: Logger,
  ) {
    this.configured = list.length > 0;
    this.#trust = proxyAddr.compile([...list]);
  }

  isTrusted(address: string | undefined): boolean {
    return this.configured && address !== undefined && this.#trust(address, 0);
  }

  /**
   * The original request. `envoyPath` is the part of the path after `/auth` (Envoy's ext_authz
   * `path_prefix`), used as the original path when no `X-Original-URI`/`X-Forwarded-Uri` is sent.
   */
  originalRequest(request: FastifyRequest, envoyPath?: string): OriginalRequest {
    const peer = plainIp(request.socket.remoteAddress ?? '');
    const headers = distinctHeaders(request);
    if (!this.isTrusted(peer)) {
      if (ORIGINAL_HEADERS.some((h) => headers[h] !== undefined) || headers['x-forwarded-for'] !== undefined) this.#warnUntrusted(peer);
      // Once trusted proxies are configured, any other peer talks to credgate directly: it is the end user.
      return { trusted: false, method: undefined, host: undefined, uri: undefined, clientIp: peer, endUserIp: this.configured ? peer : undefined, ambiguous: undefined };
    }
    const one = (name: (typeof ORIGINAL_HEADERS)[number]) => headers[name]?.[0];
    // A header sent twice, or the nginx-style and the Traefik/Caddy-style header disagreeing: the
    // proxy set one family and passed the client's copy of the other through. Believing either
    // could turn a push into a fetch, so the request is ambiguous (and denied by the policy).
    const ambiguous =
      ORIGINAL_HEADERS.find((h) => (headers[h]?.length ?? 0) > 1) ??
      CONFLICTING.find(([a, b]) => one(a) !== undefined && one(b) !== undefined && one(a) !== one(b))?.join(' and ');
    let endUserIp: string | undefined;
    if (headers['x-forwarded-for'] !== undefined) {
      const address = plainIp(proxyAddr(request.raw, this.#trust));
      endUserIp = isIP(address) !== 0 ? address : undefined;
    } else {
      const realIp = one('x-real-ip')?.trim();
      endUserIp = realIp !== undefined && isIP(realIp) !== 0 ? plainIp(realIp) : undefined;
    }
    const search = request.url.indexOf('?');
    const uri = one('x-original-uri') ?? one('x-forwarded-uri') ?? (envoyPath !== undefined ? '/' + envoyPath + (search >= 0 ? request.url.slice(search) : '') : undefined);
    return {
      trusted: true,
      method: one('x-original-method') ?? one('x-forwarded-method') ?? (envoyPath !== undefined ? request.method : undefined),
      host: one('x-forwarded-host') ?? one('x-original-host') ?? headers.host?.[0],
      uri,
      clientIp: endUserIp ?? peer,
      endUserIp,
      ambiguous,
    };
  }

  #warnUntrusted(peer: string): void {
    const now = Date.now();
    if (now - this.#lastWarning < 60_000) return;
    this.#lastWarning = now;
    this.log.warn({ peer }, 'forwarded headers from a peer that is not a trusted proxy were ignored (set trustedProxies / CREDGATE_TRUSTED_PROXIES)');
  }
}

/** Whether the direct peer of `request` is a configured trusted proxy. */
export function isTrustedPeer(trust: TrustedProxies, request: FastifyRequest): boolean {
  return trust.isTrusted(plainIp(request.socket.remoteAddress ?? ''));
}
