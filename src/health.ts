import type { UpstreamError } from './errors.js';

export interface HealthProbes {
  metadataLoaded(): boolean;
  jwksLoaded(): boolean;
  /** Circuit breaker of each AS endpoint. */
  circuits?(): Record<string, { state: 'closed' | 'half_open' | 'open'; lastFailure?: string }>;
  /** The shared state (Redis), when configured. Reported, but never makes the replica unready: without it
   * credgate decides with local state (README "Several replicas"), which beats taking every replica out. */
  sharedState?(): { ok: boolean; detail?: string };
}

export interface Check {
  ok: boolean;
  detail?: string;
  /** false: reported, but does not decide readiness. */
  required?: false;
}

/**
 * What `/readyz` reports. A misconfiguration reported by the authorization server (credgate's
 * client rejected) is remembered until a call to that endpoint succeeds again; user-triggerable
 * errors never land here, so no client can flip readiness.
 *
 * Open circuits are reported but do NOT make credgate unready. The AS is shared by every replica:
 * when it is down, every replica's circuit opens together, and an orchestrator that took them all
 * out of rotation would turn fast 503s (and the answers credgate can still give: cached identities,
 * stale-if-error) into connection errors at the proxy, a total outage that also outlasts the AS's
 * own recovery by the probe period. Alert on `credgate_upstream_circuit_state` instead. Readiness
 * does fail for what is this replica's own: no discovery or JWKS loaded yet (nothing to verify
 * with), the AS refusing credgate's client, overload, and shutting down.
 */
export class Health {
  #misconfigured = new Map<string, string>();
  #shuttingDown = false;
  #pressure: () => string | undefined = () => undefined;

  constructor(private readonly probes: HealthProbes) {}

  /** Where to learn whether the process sheds load now (the main listener's under-pressure). */
  watchPressure(probe: () => string | undefined): void {
    this.#pressure = probe;
  }

  reportMisconfigured(err: UpstreamError): void {
    this.#misconfigured.set(err.endpoint, err.message);
  }

  reportOk(endpoint: string): void {
    this.#misconfigured.delete(endpoint);
  }

  shutDown(): void {
    this.#shuttingDown = true;
  }

  get shuttingDown(): boolean {
    return this.#shuttingDown;
  }

  /** `required: false` marks a check that is reported but does not decide readiness. */
  status(): { ready: boolean; checks: Record<string, Check> } {
    const pressure = this.#pressure();
    const circuits = this.probes.circuits?.() ?? {};
    const open = Object.entries(circuits).filter(([, c]) => c.state !== 'closed');
    const checks: Record<string, Check> = {
      configuration: { ok: true },
      discovery: { ok: this.probes.metadataLoaded() },
      jwks: { ok: this.probes.jwksLoaded() },
      client: this.#misconfigured.size === 0 ? { ok: true } : { ok: false, detail: [...this.#misconfigured.values()].join('; ') },
      // Reported, not required: see the class comment for why an open circuit does not fail readiness.
      upstream: open.length === 0 ? { ok: true } : { ok: false, required: false, detail: open.map(([endpoint, c]) => `${endpoint} circuit ${c.state.replace('_', '-')}${c.lastFailure ? ` (${c.lastFailure})` : ''}`).join('; ') },
      load: pressure === undefined ? { ok: true } : { ok: false, detail: pressure },
      lifecycle: this.#shuttingDown ? { ok: false, detail: 'shutting down' } : { ok: true },
    };
    if (this.probes.sharedState) checks.sharedState = { ...this.probes.sharedState(), required: false };
    return { ready: Object.values(checks).every((c) => c.ok || c.required === false), checks };
  }
}
