import * as oauth from 'oauth4webapi';
import { ConfigError, UpstreamError } from '../errors.js';
import type { Config } from '../config/schema.js';
import type { Deadline } from './deadline.js';
import type { UpstreamHttp } from './http.js';

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|\[::1\]|localhost)$/;

/** Whether oauth4webapi may talk plain HTTP to this URL: only on loopback, or when the operator says so. */
export function insecureAllowed(url: string, config: Pick<Config, 'allowInsecureHttp'>): boolean {
  const u = new URL(url);
  return u.protocol === 'https:' || config.allowInsecureHttp === true || LOOPBACK.test(u.hostname);
}

/** Auth0 lists no introspection endpoint in its discovery document; these are its fixed paths. */
function auth0Path(issuer: string, path: string): string {
  return new URL(path, issuer.endsWith('/') ? issuer : issuer + '/').href;
}

/**
 * The authorization server's metadata: discovery (`/.well-known/openid-configuration`), then the
 * configured overrides, then Auth0's paths for anything still missing. Fetched once; concurrent
 * callers share the pending fetch; a failure is not cached, so the next caller tries again.
 */
export class AuthorizationServerMetadata {
  #value: oauth.AuthorizationServer | undefined;
  #pending: Promise<oauth.AuthorizationServer> | undefined;

  constructor(
    private readonly config: Config & { issuer: string },
    private readonly http: UpstreamHttp,
  ) {
    for (const key of ['issuer', 'tokenUrl', 'introspectionUrl', 'jwksUrl'] as const) {
      const value = config[key];
      if (value !== undefined && !insecureAllowed(value, config)) {
        throw new ConfigError(`invalid configuration: ${key} must use https:// (plain http is allowed only on loopback or with allowInsecureHttp)`, key);
      }
    }
  }

  get current(): oauth.AuthorizationServer | undefined {
    return this.#value;
  }

  /** `deadline`: of the decision that needs the metadata; it bounds the fetch only if this call starts it. */
  get(deadline?: Deadline): Promise<oauth.AuthorizationServer> {
    if (this.#value) return Promise.resolve(this.#value);
    this.#pending ??= this.#load(deadline).then(
      (as) => {
        this.#value = as;
        this.#pending = undefined;
        return as;
      },
      (err: unknown) => {
        this.#pending = undefined;
        throw err;
      },
    );
    return this.#pending;
  }

  async #load(deadline: Deadline | undefined): Promise<oauth.AuthorizationServer> {
    const { issuer, tokenUrl, introspectionUrl, jwksUrl } = this.config;
    let discovered: oauth.AuthorizationServer;
    if (tokenUrl && introspectionUrl && jwksUrl) {
      // Everything pinned: no discovery round trip needed.
      discovered = { issuer };
    } else {
      const issuerUrl = new URL(issuer);
      const options = { [oauth.customFetch]: this.http.fetcher('discovery', deadline), [oauth.allowInsecureRequests]: issuerUrl.protocol === 'http:' };
      discovered = await this.http.run('discovery', async () => {
        const response = await oauth.discoveryRequest(issuerUrl, options);
        try {
          return await oauth.processDiscoveryResponse(issuerUrl, response);
        } catch (err) {
          throw new UpstreamError(`discovery document rejected: ${(err as Error).message}`, 'discovery', 'bad_response', { cause: err, status: response.status });
        }
      }, deadline);
    }
    const as: oauth.AuthorizationServer = {
      ...discovered,
      token_endpoint: tokenUrl ?? discovered.token_endpoint ?? auth0Path(discovered.issuer, 'oauth/token'),
      introspection_endpoint: introspectionUrl ?? discovered.introspection_endpoint ?? auth0Path(discovered.issuer, 'oauth/introspect'),
      jwks_uri: jwksUrl ?? discovered.jwks_uri ?? auth0Path(discovered.issuer, '.well-known/jwks.json'),
    };
    for (const key of ['token_endpoint', 'introspection_endpoint', 'jwks_uri'] as const) {
      if (!insecureAllowed(as[key]!, this.config)) {
        throw new UpstreamError(`discovery gave a plain-http ${key} off loopback; refusing`, 'discovery', 'misconfigured');
      }
    }
    return Object.freeze(as);
  }
}
