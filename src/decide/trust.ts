import proxyAddr from 'proxy-addr';
import type { Logger } from '../log.js';

/**
 * Trusted proxies and callers (`trustedProxies`): the only peers whose word about the original
 * request and the end user's address is believed (`X-Original-*`, `X-Forwarded-*`, `X-Real-IP`,
 * nginx's `Client-IP`, `clientIp` of `/v1/verify`). A core decision: adapters ask it, the decision
 * pipeline acts on the answer. `X-Forwarded-For` is walked from the right past trusted hops
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

  /** For proxy-addr's walk over X-Forwarded-For: whether a hop is a trusted proxy. */
  readonly isTrustedHop = (address: string, index: number): boolean => this.#trust(address, index);

  /** Whether trusted proxies are configured at all: once they are, any other peer is the end user itself. */
  get peersAreEndUsers(): boolean {
    return this.configured;
  }

  /** Forwarded headers from an untrusted peer were ignored: said at most once a minute. */
  warnUntrusted(peer: string): void {
    const now = Date.now();
    if (now - this.#lastWarning < 60_000) return;
    this.#lastWarning = now;
    this.log.warn({ peer }, 'forwarded headers from a peer that is not a trusted proxy were ignored (set trustedProxies / CREDGATE_TRUSTED_PROXIES)');
  }
}
