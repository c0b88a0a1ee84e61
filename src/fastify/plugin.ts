/**
 * `credgate/fastify`: a fastify plugin that accepts legacy HTTP Basic credentials (and Bearer
 * tokens) on the application's own routes, verified by credgate without a proxy hop.
 *
 * @fastify/basic-auth reads the Basic header; its `validate` is credgate's decision pipeline, which
 * re-reads the raw `Authorization` header with credgate's strict parser, so a header that
 * @fastify/basic-auth would accept leniently (non-canonical base64, invalid UTF-8, an empty
 * username, a second `Authorization` header) is still refused. Every request, whatever its header,
 * is decided by `service.pipeline.decide` with `interface: 'plugin'`: the same policy, trust, login
 * protection, strategies, scope checks, metrics and log line as `/auth`.
 */
import fastifyBasicAuth from '@fastify/basic-auth';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { configSchema, type Config, type ConfigInput } from '../config/schema.js';
import type { CredentialsProblem } from '../decide/pipeline.js';
import { authorizationHeaders, isProblem, parseAuthorization } from '../http/credentials.js';
import { readOriginalRequest } from '../http/originalRequest.js';
import { createLogger, type Logger } from '../log.js';
import { createService, requireServiceConfig, type Service } from '../service.js';
import type { ClientKeys } from '../upstream/clientKeys.js';
import { SCOPE_TOKEN } from '../vocabulary.js';
import type { Credentials, CredentialType, Decision } from '../verify/types.js';

export { loadConfig } from '../config/load.js';
export type { Config, ConfigInput } from '../config/schema.js';
export { generateClientKeys, loadClientKeys, type ClientKeys } from '../upstream/clientKeys.js';
export type { Service } from '../service.js';
export type { Logger } from '../log.js';

/** The verified identity the plugin puts on `request.credgate`: the authorization server's, never what the client typed. */
export interface CredgateIdentity {
  /** The AS's `sub`. */
  readonly subject: string;
  /** The AS's username claim (`usernameClaims`), or the login name the AS authenticated; undefined for a token without one. */
  readonly username: string | undefined;
  /** Scopes the credential grants. */
  readonly scopes: readonly string[];
  /** How the credential was proven. */
  readonly credential: CredentialType;
  /** Audience the credential was issued for. */
  readonly audience: string;
  /** Epoch seconds; undefined for an app-specific password that never expires. */
  readonly expiresAt: number | undefined;
}

/** What a route asks for, in its `config.credgate`. */
export interface CredgateRouteOptions {
  /** Scopes the credential must grant (all of them), on top of what the policy requires. */
  readonly scopes?: readonly string[];
  /**
   * Whether the service's policy file (if it has one) judges this request by its method, Host and
   * raw URL. Default: the plugin's `policy` option (itself default true).
   */
  readonly policy?: boolean;
}

/**
 * `config.credgate` of a route: `true` or an object requires credentials; `false` exempts the
 * route (also from `everyRoute`); absent: protected only with `everyRoute`.
 */
export type CredgateRouteConfig = boolean | CredgateRouteOptions;

interface CommonOptions {
  /**
   * Every route registered after the plugin (in its scope and below) requires credentials unless its
   * `config.credgate` is `false`. Default false: only routes with `config.credgate` set.
   */
  readonly everyRoute?: boolean;
  /** Accept `Authorization: Bearer` (an access token or an app-specific password) as well. Default true. */
  readonly bearer?: boolean;
  /** Apply the service's policy file to routes that do not say otherwise. Default true (no effect without a policy file). */
  readonly policy?: boolean;
  /** Realm of the `WWW-Authenticate` challenge. Default: the service's `realm`. */
  readonly realm?: string;
}

/** A credgate service the application already runs: the same cache, login ledger, strategies and metrics. Not closed by the plugin. */
export interface SharedServiceOptions extends CommonOptions {
  readonly service: Service;
}

/** A configuration to build a service from; the plugin closes that service when fastify closes. */
export interface OwnServiceOptions extends CommonOptions {
  /** credgate's configuration: the keys of its YAML file, or what `loadConfig()` read from the environment. */
  readonly config: ConfigInput | Config;
  /** Introspection client keys held in memory; default: `introspectionKeyFile` of the configuration. */
  readonly keys?: ClientKeys;
  /** Logger for credgate's decision lines; default: credgate's own JSON logger on stdout at `logLevel`. */
  readonly logger?: Logger;
}

export type CredgatePluginOptions = SharedServiceOptions | OwnServiceOptions;

/** What the plugin adds to the fastify instance as `fastify.credgate`. */
export interface CredgateDecoration {
  readonly service: Service;
  /**
   * The authentication hook (onRequest, preValidation or preHandler) the plugin adds to protected
   * routes; for routes registered before the plugin, or for use in one's own hooks. It reads the
   * requirements from the request's route (`config.credgate`).
   */
  readonly authenticate: (request: FastifyRequest, reply: FastifyReply) => Promise<FastifyReply | undefined>;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The identity credgate verified; undefined on a route credgate does not protect. */
    credgate: CredgateIdentity | undefined;
  }
  interface FastifyInstance {
    credgate: CredgateDecoration;
  }
  interface FastifyContextConfig {
    credgate?: CredgateRouteConfig;
  }
}

/**
 * Builds a credgate service from a configuration, as `credgate serve` does (without its listeners).
 * To share one service between several fastify instances, build it once and pass it as `service`.
 */
export async function createCredgateService(config: ConfigInput | Config, options: { keys?: ClientKeys; logger?: Logger } = {}): Promise<Service> {
  const parsed = requireServiceConfig(configSchema.parse(config), { inMemoryKeys: options.keys !== undefined });
  return createService(parsed, options.logger ?? createLogger({ level: parsed.logLevel }), { keys: options.keys });
}

const REALM = /^[\x20-\x21\x23-\x5b\x5d-\x7e]{1,100}$/;
const JSON_TYPE = 'application/json; charset=utf-8';
const BEARER_REFUSED: CredentialsProblem = { reason: 'malformed_credentials', message: 'Bearer credentials are not accepted here' };

/** The route's requirements, checked once when the route is registered (a typo fails start-up, not a request). */
function checkRouteConfig(value: unknown, where: string): void {
  if (value === undefined || typeof value === 'boolean') return;
  if (typeof value !== 'object' || value === null) throw new TypeError(`credgate: config.credgate of ${where} must be true, false or { scopes, policy }`);
  const unknown = Object.keys(value).filter((k) => k !== 'scopes' && k !== 'policy');
  if (unknown.length > 0) throw new TypeError(`credgate: config.credgate of ${where} has unknown option(s) ${unknown.join(', ')}`);
  const { scopes, policy } = value as CredgateRouteOptions;
  if (scopes !== undefined && (!Array.isArray(scopes) || scopes.some((s) => typeof s !== 'string' || !SCOPE_TOKEN.test(s)))) {
    throw new TypeError(`credgate: config.credgate.scopes of ${where} must be a list of RFC 6749 scope-tokens`);
  }
  if (policy !== undefined && typeof policy !== 'boolean') throw new TypeError(`credgate: config.credgate.policy of ${where} must be a boolean`);
}

/** Every `Host` header line of a request (Node keeps only the first in `request.headers`). */
function hostHeaders(rawHeaders: readonly string[]): string[] {
  const hosts: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) if (rawHeaders[i]!.length === 4 && rawHeaders[i]!.toLowerCase() === 'host') hosts.push(rawHeaders[i + 1]!);
  return hosts;
}

const credgatePlugin: FastifyPluginAsync<CredgatePluginOptions> = async (fastify: FastifyInstance, options: CredgatePluginOptions) => {
  if (options.realm !== undefined && !REALM.test(options.realm)) throw new TypeError('credgate: realm must be 1-100 printable ASCII characters without " or \\');
  if ('service' in options) return install(fastify, options.service, options);
  const service = await createCredgateService(options.config, { keys: options.keys, logger: options.logger });
  try {
    await install(fastify, service, options);
  } catch (err) {
    await service.close();
    throw err;
  }
  let warming: Promise<void> | undefined;
  service.policy?.watch();
  // Discovery and JWKS before the first request, without holding up start-up while the AS is away.
  fastify.addHook('onReady', async () => {
    warming = service.warmUp();
  });
  fastify.addHook('onClose', async () => {
    await warming;
    await service.close();
  });
};

/** The hook, @fastify/basic-auth, the decorations and the route hook, on `service`. */
async function install(fastify: FastifyInstance, service: Service, options: CommonOptions): Promise<void> {
  const realm = options.realm ?? service.config.realm;
  const acceptBearer = options.bearer ?? true;
  const policyByDefault = options.policy ?? true;
  const everyRoute = options.everyRoute ?? false;
  // Basic first: most clients that send a password answer the first challenge they understand.
  const challenge = acceptBearer ? [`Basic realm="${realm}", charset="UTF-8"`, `Bearer realm="${realm}"`] : `Basic realm="${realm}", charset="UTF-8"`;

  /** Decisions made in @fastify/basic-auth's `validate`, and errors thrown there, handed back to the hook. */
  const decided = new WeakMap<FastifyRequest, Decision>();
  const failed = new WeakMap<FastifyRequest, unknown>();

  const decide = async (request: FastifyRequest, credentials: Credentials | CredentialsProblem): Promise<Decision> => {
    const route = request.routeOptions.config.credgate;
    const wanted: CredgateRouteOptions = typeof route === 'object' ? route : {};
    const seen = readOriginalRequest(service.trust, request);
    const hosts = hostHeaders(request.raw.rawHeaders);
    return service.pipeline.decide({
      interface: 'plugin',
      protocol: 'http',
      credentials,
      // The original request is this very request, exactly as received (the raw target, not decoded).
      original: (wanted.policy ?? policyByDefault) ? { method: request.raw.method, host: hosts[0], target: request.raw.url } : undefined,
      pinnedScopes: wanted.scopes ?? [],
      peer: { address: seen.peer, trusted: seen.trusted },
      // Believed only from a trusted proxy in front of the application (X-Forwarded-For, X-Real-IP).
      reportedClientIp: seen.reportedClientIp,
      peerIsEndUser: !seen.trusted,
      ambiguous: hosts.length > 1 ? 'the request has more than one Host header' : undefined,
      requestId: request.id,
    });
  };

  // Registered in a context of its own, so that `fastify.basicAuth` (which would skip the strict
  // pre-parse and the rendering below) is not decorated on the application.
  let basicAuth: ((request: FastifyRequest, reply: FastifyReply, done: (err?: Error) => void) => void) | undefined;
  await fastify.register(async (child) => {
    await child.register(fastifyBasicAuth, {
      // The challenge is set below for every 401, whichever way the credentials came.
      authenticate: false,
      // Lenient on whitespace: credgate's parser, not this regular expression, decides what is well formed.
      strictCredentials: false,
      utf8: true,
      async validate(_username, _password, request) {
        // The pair @fastify/basic-auth decoded is not used: the raw header is parsed again, strictly.
        try {
          const decision = await decide(request, parseAuthorization(authorizationHeaders(request.raw.rawHeaders)));
          decided.set(request, decision);
          if (!decision.allow) return new Error('denied by credgate');
        } catch (err) {
          failed.set(request, err);
          return new Error('credgate failed');
        }
        return undefined;
      },
    });
    basicAuth = child.basicAuth as typeof basicAuth;
  });

  const viaBasicAuth = (request: FastifyRequest, reply: FastifyReply) =>
    new Promise<Decision>((resolve, reject) => {
      basicAuth!(request, reply, (err) => {
        const decision = decided.get(request);
        if (decision !== undefined) return resolve(decision);
        if (failed.has(request)) return reject(failed.get(request));
        // @fastify/basic-auth refused the header without calling validate. credgate's parser accepted
        // it, so this does not happen; should it, the request is refused and counted all the same.
        if (err !== undefined) return resolve(decide(request, { reason: 'malformed_credentials', message: 'Basic credentials refused by the Basic parser' }));
        reject(new Error('credgate: @fastify/basic-auth passed a request without calling validate'));
      });
    });

  const deny = (reply: FastifyReply, status: number, body: Record<string, unknown>) => {
    if (status === 401) reply.header('www-authenticate', challenge);
    return reply.code(status).header('cache-control', 'no-store').type(JSON_TYPE).send(body);
  };

  const authenticate = async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> => {
    // Missing, malformed and Bearer credentials are decided here; a well-formed Basic header goes
    // through @fastify/basic-auth, whose validate decides it.
    const parsed = parseAuthorization(authorizationHeaders(request.raw.rawHeaders));
    const decision =
      isProblem(parsed) ? await decide(request, parsed)
      : parsed.kind === 'basic' ? await viaBasicAuth(request, reply)
      : await decide(request, acceptBearer ? parsed : BEARER_REFUSED);
    const identity = decision.identity;
    if (decision.allow && identity) {
      request.credgate = Object.freeze({
        subject: identity.subject,
        username: identity.username,
        scopes: Object.freeze([...identity.scopes]),
        credential: identity.credential,
        audience: identity.audience,
        expiresAt: identity.expiresAt,
      });
      return undefined;
    }
    // A hook that answers returns the reply: fastify goes no further with the request.
    switch (decision.reason) {
      case 'throttled':
        reply.header('retry-after', String(decision.retryAfterSeconds ?? 1));
        return deny(reply, 429, { reason: decision.reason, retryAfterSeconds: decision.retryAfterSeconds });
      case 'upstream_unavailable':
        reply.header('retry-after', '5');
        return deny(reply, 503, { reason: decision.reason });
      case 'missing_credentials':
      case 'malformed_credentials':
        return deny(reply, 401, { reason: decision.reason, message: decision.detail });
      case 'insufficient_scope':
        return deny(reply, 403, { reason: decision.reason, missingScopes: decision.missingScopes });
      case 'denied_by_policy':
        return deny(reply, 403, { reason: decision.reason });
      default:
        // invalid_credentials; and an allow without an identity, which the pipeline never gives, is no allow here.
        return deny(reply, 401, { reason: 'invalid_credentials' });
    }
  };

  fastify.decorateRequest('credgate', undefined);
  fastify.decorate('credgate', Object.freeze({ service, authenticate }));
  fastify.addHook('onRoute', (route) => {
    const where = `${String(route.method)} ${route.url}`;
    const wanted = route.config?.credgate;
    checkRouteConfig(wanted, where);
    if (wanted === false || (wanted === undefined && !everyRoute)) return;
    const existing = route.onRequest === undefined ? [] : Array.isArray(route.onRequest) ? route.onRequest : [route.onRequest];
    // First: the route's own hooks run for authenticated requests only.
    if (existing.includes(authenticate)) return;
    route.onRequest = [authenticate, ...existing] as typeof route.onRequest;
  });
}

/** The plugin (fastify-plugin: it decorates the instance it is registered on). */
export const credgate = fp(credgatePlugin, { fastify: '5.x', name: 'credgate' });
export default credgate;
