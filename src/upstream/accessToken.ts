import { createRemoteJWKSet, customFetch, errors, type JWTPayload } from 'jose';
import { UpstreamError } from '../errors.js';
import type { Config } from '../config/schema.js';
import type { FetchLike, UpstreamHttp } from './http.js';
import type { AuthorizationServerMetadata } from './metadata.js';
import { UnusableKeyError, verifyJwt } from './jws.js';

/**
 * Verifies JWT access tokens locally against the authorization server's JWKS: signature with an
 * allow-listed asymmetric algorithm, `iss`, `aud`, `exp`/`nbf` with a small clock tolerance. jose
 * fetches the JWKS and picks and imports the key; the signature and claims are checked on this
 * thread by jws.ts (no thread-pool job per token).
 * Returns the claims, or null for any token that does not pass. Throws UpstreamError only when
 * the JWKS itself cannot be had. jose refetches the JWKS for an unknown `kid` at most once per
 * 30 s cooldown (`JWKS_COOLDOWN_MS`) and shares one pending fetch among concurrent callers, so
 * unknown kids cannot be turned into a flood of requests to the AS; a failing JWKS endpoint is
 * shielded by its circuit breaker.
 */
/** Shortest time between two JWKS fetches caused by an unknown `kid` (jose's default, made explicit). */
export const JWKS_COOLDOWN_MS = 30_000;

export class AccessTokenVerifier {
  #jwks: ReturnType<typeof createRemoteJWKSet> | undefined;
  readonly #algorithms: ReadonlySet<string>;

  constructor(
    private readonly config: Config & { audience: string },
    private readonly metadata: AuthorizationServerMetadata,
    private readonly http: UpstreamHttp,
  ) {
    this.#algorithms = new Set(config.jwtAlgorithms);
  }

  async #keySet() {
    if (this.#jwks) return this.#jwks;
    const as = await this.metadata.get();
    const fetchJwks = strictJwksFetch(this.http.fetcher('jwks'));
    this.#jwks = createRemoteJWKSet(new URL(as.jwks_uri!), {
      // Each attempt has its own deadline (upstreamTimeoutMs); this one bounds them all, retries included.
      timeoutDuration: Math.max(this.config.upstreamTimeoutMs, this.config.decisionTimeoutMs),
      cooldownDuration: JWKS_COOLDOWN_MS,
      cacheMaxAge: 10 * 60_000,
      [customFetch]: ((url: string, init: Parameters<FetchLike>[1]) => this.http.run('jwks', () => fetchJwks(url, init))) as never,
    });
    return this.#jwks;
  }

  /** Fetches the JWKS now (readiness, start-up warm-up). */
  async warmUp(): Promise<void> {
    await (await this.#keySet()).reload();
  }

  get loaded(): boolean {
    return this.#jwks?.jwks() !== undefined;
  }

  async verify(token: string, audience: string): Promise<JWTPayload | null> {
    const jwks = await this.#keySet();
    const as = this.metadata.current!;
    try {
      const payload = await verifyJwt(token, jwks, {
        issuer: as.issuer,
        audience,
        algorithms: this.#algorithms,
        clockToleranceSeconds: this.config.clockToleranceSeconds,
      });
      return payload !== null && typeof payload.sub === 'string' && payload.sub.length > 0 ? payload : null;
    } catch (err) {
      if (err instanceof UpstreamError) throw err;
      if (err instanceof errors.JWKSTimeout) throw new UpstreamError('JWKS did not answer in time', 'jwks', 'timeout', { cause: err });
      if (err instanceof UnusableKeyError) throw new UpstreamError(err.message, 'jwks', 'bad_response', { cause: err });
      if (err instanceof errors.JOSEError) return null; // unknown kid, several keys match, alg jose does not support
      throw new UpstreamError('JWKS could not be used', 'jwks', 'bad_response', { cause: err });
    }
  }
}

/** A JWKS answer that is not 200 JSON with a `keys` array means "could not ask", not "bad token". */
function strictJwksFetch(fetch: FetchLike): FetchLike {
  return async (url, init) => {
    const response = await fetch(url, init);
    const status = response.status;
    if (status !== 200) throw new UpstreamError(`JWKS answered HTTP ${status}`, 'jwks', 'bad_response', { status });
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new UpstreamError('JWKS answer is not JSON', 'jwks', 'bad_response', { status });
    }
    if (!parsed || typeof parsed !== 'object' || !Array.isArray((parsed as { keys?: unknown }).keys)) {
      throw new UpstreamError('JWKS answer has no keys array', 'jwks', 'bad_response', { status });
    }
    return new Response(text, { status: 200, headers: { 'content-type': 'application/json' } });
  };
}
