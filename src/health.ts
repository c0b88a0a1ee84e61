import type { UpstreamError } from './errors.js';

/**
 * What `/readyz` reports. A misconfiguration reported by the authorization server (credgate's
 * client rejected) is remembered until a call to that endpoint succeeds again; user-triggerable
 * errors never land here, so no client can flip readiness.
 */
export class Health {
  #misconfigured = new Map<string, string>();
  #shuttingDown = false;

  constructor(private readonly probes: { metadataLoaded(): boolean; jwksLoaded(): boolean }) {}

  reportMisconfigured(err: UpstreamError): void {
    this.#misconfigured.set(err.endpoint, err.message);
  }

  reportOk(endpoint: string): void {
    this.#misconfigured.delete(endpoint);
  }

  shutDown(): void {
    this.#shuttingDown = true;
  }

  status(): { ready: boolean; checks: Record<string, { ok: boolean; detail?: string }> } {
    const checks: Record<string, { ok: boolean; detail?: string }> = {
      configuration: { ok: true },
      discovery: { ok: this.probes.metadataLoaded() },
      jwks: { ok: this.probes.jwksLoaded() },
      client: this.#misconfigured.size === 0 ? { ok: true } : { ok: false, detail: [...this.#misconfigured.values()].join('; ') },
      lifecycle: this.#shuttingDown ? { ok: false, detail: 'shutting down' } : { ok: true },
    };
    return { ready: Object.values(checks).every((c) => c.ok), checks };
  }
}
