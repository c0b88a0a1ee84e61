/**
 * One error base class; every subclass carries a stable string `code` that tests and logs use.
 * Messages never contain a password, token, assertion or secret.
 */
export class CredgateError extends Error {
  readonly code: string = 'ERR_CREDGATE';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Configuration that cannot be used; stops start-up. `key` names the offending setting. */
export class ConfigError extends CredgateError {
  override readonly code = 'ERR_CONFIG';
  constructor(
    message: string,
    readonly key?: string,
  ) {
    super(message);
  }
}

/**
 * How an upstream call failed:
 * - `unreachable`: connection refused/reset, DNS, TLS;
 * - `timeout`: no complete answer in time;
 * - `bad_response`: an answer that is not what the protocol promises (HTML, 5xx, wrong types);
 * - `misconfigured`: the authorization server rejected credgate itself (bad client credentials,
 *   grant type not enabled): an operator must act, no user is at fault;
 * - `circuit_open`: not asked at all, because the endpoint's circuit breaker is open after
 *   repeated failures (it lets a probe through after `breakerHalfOpenAfterMs`);
 * - `overloaded`: not asked at all, because `maxConcurrentUpstream` calls are already under way.
 */
export type UpstreamFailure = 'unreachable' | 'timeout' | 'bad_response' | 'misconfigured' | 'circuit_open' | 'overloaded';

/** "Could not ask": a strategy throws this; the verifier turns it into `upstream_unavailable`. */
export class UpstreamError extends CredgateError {
  override readonly code = 'ERR_UPSTREAM';
  constructor(
    message: string,
    readonly endpoint: string,
    readonly failure: UpstreamFailure,
    options?: { cause?: unknown; asError?: string; status?: number; sent?: false },
  ) {
    super(message, options);
    this.asError = options?.asError;
    this.status = options?.status;
    this.sent = options?.sent ?? true;
  }

  /** The AS's own OAuth `error` code, when it sent one (`invalid_client`, `server_error`, …); logged as `asError`. */
  readonly asError: string | undefined;
  /** The HTTP status of the answer that was refused, when there was one. */
  readonly status: number | undefined;
  /** false only when the request surely never reached the AS (connection refused, DNS failure,
   * connect timeout, breaker open, concurrency limit): only then may a password grant be retried. */
  readonly sent: boolean;
}
