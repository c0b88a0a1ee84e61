import * as oauth from 'oauth4webapi';
import { UpstreamError } from '../errors.js';
import type { Config } from '../config/schema.js';
import type { ClientKeys } from './clientKeys.js';
import { privateKeyJwt } from './clientAssertion.js';
import type { Deadline } from './deadline.js';
import type { UpstreamHttp } from './http.js';
import type { AuthorizationServerMetadata } from './metadata.js';

/**
 * Parses an RFC 7662 answer. oauth4webapi insists on JSON and on `active` being a real boolean
 * (`"true"` or `1` are errors, never an allow); anything else wrong is "could not ask".
 */
export async function processIntrospection(as: oauth.AuthorizationServer, client: oauth.Client, response: Response): Promise<oauth.IntrospectionResponse> {
  try {
    return await oauth.processIntrospectionResponse(as, client, response);
  } catch (err) {
    if (err instanceof oauth.ResponseBodyError) {
      const misconfigured = err.error === 'invalid_client' || err.error === 'unauthorized_client' || err.status === 401;
      throw new UpstreamError(`introspection endpoint answered ${err.status} ${err.error}`, 'introspection', misconfigured ? 'misconfigured' : 'bad_response', { cause: err, asError: err.error, status: err.status });
    }
    if (err instanceof oauth.WWWAuthenticateChallengeError) {
      throw new UpstreamError(`introspection endpoint refused credgate's client authentication (${err.status})`, 'introspection', 'misconfigured', { status: err.status });
    }
    throw new UpstreamError(`introspection answer is not valid (HTTP ${response.status})`, 'introspection', 'bad_response', { cause: err, status: response.status });
  }
}

/**
 * RFC 7662 token introspection, authenticated with a `private_key_jwt` client assertion
 * (RFC 7523 §2.2: iss = sub = client id, aud = issuer, unique jti, 60 s lifetime, alg from the key)
 * or a client secret.
 */
export class Introspection {
  readonly #client: oauth.Client;
  readonly #auth: oauth.ClientAuth;

  constructor(
    config: Config & { audience: string },
    keys: ClientKeys | undefined,
    private readonly metadata: AuthorizationServerMetadata,
    private readonly http: UpstreamHttp,
  ) {
    this.#client = { client_id: config.introspectionClientId ?? config.audience };
    if (keys) this.#auth = privateKeyJwt(keys.signing);
    else if (config.introspectionClientSecret) this.#auth = oauth.ClientSecretPost(config.introspectionClientSecret);
    else throw new Error('introspection needs a key or a client secret'); // prevented by the config schema
  }

  async introspect(token: string, deadline?: Deadline): Promise<oauth.IntrospectionResponse> {
    const as = await this.metadata.get(deadline);
    // Each attempt builds its own request, so a retry signs a fresh client assertion (new jti).
    return this.http.run('introspection', async () => {
      const response = await oauth.introspectionRequest(as, this.#client, this.#auth, token, {
        [oauth.customFetch]: this.http.fetcher('introspection', deadline),
        [oauth.allowInsecureRequests]: true, // checked once for every endpoint in AuthorizationServerMetadata
      });
      return processIntrospection(as, this.#client, response);
    }, deadline);
  }
}
