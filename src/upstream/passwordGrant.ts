import * as oauth from 'oauth4webapi';
import { UpstreamError } from '../errors.js';
import type { Config } from '../config/schema.js';
import type { Deadline } from './deadline.js';
import type { UpstreamHttp } from './http.js';
import type { AuthorizationServerMetadata } from './metadata.js';

/**
 * What the token endpoint said about a username and password.
 * `rejected` means "not this user's password" in one of Auth0's ways (RFC 6749 §5.2 `invalid_grant`,
 * Auth0's `mfa_required`, `too_many_attempts`, a 403 `access_denied` from a rule or action, a
 * blocked user): the caller moves on to the next strategy. Anything that says credgate itself is
 * misconfigured, or an answer that is not OAuth at all, is thrown as UpstreamError instead.
 */
export type GrantOutcome =
  | { readonly ok: true; readonly accessToken: string; readonly scope: string | undefined; readonly expiresIn: number | undefined }
  | { readonly ok: false; readonly error: string; readonly description: string | undefined };

/** Errors that blame credgate's client registration, never the user: an operator must act. */
const MISCONFIGURED = new Set(['invalid_client', 'unauthorized_client', 'unsupported_grant_type', 'invalid_scope']);

export function classifyGrantError(status: number, error: string, description: string | undefined): 'rejected' | 'misconfigured' | 'bad_response' {
  if (error === 'invalid_grant' || error === 'mfa_required' || error === 'too_many_attempts') return 'rejected';
  // Auth0: 401 `unauthorized` "user is blocked" is about the user.
  if (error === 'unauthorized' && status === 401 && /blocked/i.test(description ?? '')) return 'rejected';
  if (error === 'access_denied') {
    // 401 access_denied is Auth0's answer to a wrong client secret; "Service not found" an unknown audience.
    if (status === 401 || /^service not found/i.test(description ?? '')) return 'misconfigured';
    return 'rejected';
  }
  return MISCONFIGURED.has(error) ? 'misconfigured' : 'bad_response';
}

/** Parses a token endpoint answer (kept apart from sending so it can be tested on hand-built Responses). */
export async function processPasswordGrantResponse(as: oauth.AuthorizationServer, client: oauth.Client, response: Response): Promise<GrantOutcome> {
  try {
    const result = await oauth.processGenericTokenEndpointResponse(as, client, response);
    return { ok: true, accessToken: result.access_token, scope: result.scope, expiresIn: result.expires_in };
  } catch (err) {
    if (err instanceof oauth.ResponseBodyError) {
      const description = typeof err.error_description === 'string' ? err.error_description : undefined;
      const kind = classifyGrantError(err.status, err.error, description);
      if (kind === 'rejected') return { ok: false, error: err.error, description };
      throw new UpstreamError(`token endpoint answered ${err.status} ${err.error}${description ? `: ${description}` : ''}`, 'token', kind, { cause: err, asError: err.error, status: err.status });
    }
    if (err instanceof oauth.WWWAuthenticateChallengeError) {
      throw new UpstreamError(`token endpoint refused credgate's client authentication (${err.status})`, 'token', err.status === 401 ? 'misconfigured' : 'bad_response', { status: err.status });
    }
    throw new UpstreamError(`token endpoint answer is not a valid OAuth response (HTTP ${response.status})`, 'token', 'bad_response', { cause: err, status: response.status });
  }
}

/** The OAuth 2.0 password grant (RFC 6749 §4.3) with Auth0's `audience` parameter. */
export class PasswordGrant {
  readonly #client: oauth.Client;
  readonly #auth: oauth.ClientAuth;

  constructor(
    private readonly config: Config & { clientId: string; clientSecret: string },
    private readonly metadata: AuthorizationServerMetadata,
    private readonly http: UpstreamHttp,
  ) {
    this.#client = { client_id: config.clientId };
    this.#auth = config.tokenAuthMethod === 'client_secret_basic' ? oauth.ClientSecretBasic(config.clientSecret) : oauth.ClientSecretPost(config.clientSecret);
  }

  /** `endUserIp` goes to Auth0 as `auth0-forwarded-for` when `forwardClientIp` is on, so its brute-force
   * protection counts the end user's address rather than credgate's (Auth0 honours it only for trusted
   * confidential clients). */
  async attempt(username: string, password: string, audience: string, endUserIp?: string, deadline?: Deadline): Promise<GrantOutcome> {
    const as = await this.metadata.get(deadline);
    const parameters = new URLSearchParams({ username, password, audience });
    if (this.config.passwordGrantScope) parameters.set('scope', this.config.passwordGrantScope);
    const headers = this.config.forwardClientIp && endUserIp ? { 'auth0-forwarded-for': endUserIp } : undefined;
    // Retried only if the request surely never left (the guard's `unsent` mode for the token
    // endpoint): every attempt that reaches the AS may count as a login.
    return this.http.run('token', async () => {
      const response = await oauth.genericTokenEndpointRequest(as, this.#client, this.#auth, 'password', parameters, {
        headers,
        [oauth.customFetch]: this.http.fetcher('token', deadline),
        [oauth.allowInsecureRequests]: true, // checked once for every endpoint in AuthorizationServerMetadata
      });
      return processPasswordGrantResponse(as, this.#client, response);
    }, deadline);
  }
}
