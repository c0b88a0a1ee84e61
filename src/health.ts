import type { UpstreamError } from './errors.js';

/**
 * What `/readyz` reports. A misconfiguration reported by the authorization server (credgate's
 * client rejected) is remembered until a call to that endpoint succeeds again; user-triggerable
 * errors never land here, so no client can flip readiness.
 */
export class Health {
  #misconfigured = new Map<string, string>();
  #shuttingDown = false;

  constructor(
    private readonly probes: {
      metadataLoaded(): boolean;
      jwksLoaded(): boolean;
      /** The shared state (Redis), when configured. Reported, but never makes the replica unready: without it
       * credgate decides with local state (README "Several replicas"), which beats taking every replica out. */
      sharedState?(): { ok: boolean; detail?: string };
    },
  ) {}

  reportMisconfigured(err: UpstreamError): void {
    this.#misconfigured.set(err.endpoint, err.message);
  }

  reportOk(endpoint: string): void {
    this.#misconfigured.delete(endpoint);
  }

  shutDown(): void {
    this.#shuttingDown = true;
  }

  /** `required: false` marks a check that is reported but does not decide readiness. */
  status(): { ready: boolean; checks: Record<string, { ok: boolean; detail?: string; required?: false }> } {
    const checks: Record<string, { ok: boolean; detail?: string; required?: false }> = {
      configuration: { ok: true },
      discovery: { ok: this.probes.metadataLoaded() },
      jwks: { ok: this.probes.jwksLoaded() },
      client: this.#misconfigured.size === 0 ? { ok: true } : { ok: false, detail: [...this.#misconfigured.values()].join('; ') },
      lifecycle: this.#shuttingDown ? { ok: false, detail: 'shutting down' } : { ok: true },
    };
    if (this.probes.sharedState) checks.sharedState = { ...this.probes.sharedState(), required: false };
    return { ready: Object.values(checks).every((c) => c.ok || c.required === false), checks };
  }
}
