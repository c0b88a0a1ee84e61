import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import proxyAddr from 'proxy-addr';
import type { Config } from '../../config/schema.js';
import { ConfigError } from '../../errors.js';
import type { Service } from '../../service.js';
import type { Decision, RequestContext } from '../../verify/types.js';
import { checkPair } from '../credentials.js';
import { recordEarlyDenial } from '../errors.js';
import { headersByName, parseBackend, parseMailRequest, renderMailAnswer, type MailAnswerOptions, type MailBackend, type MailOutcome, type MailProtocol } from '../mailProtocol.js';

const BACKEND_KEYS = { imap: 'mailImapBackend', pop3: 'mailPop3Backend', smtp: 'mailSmtpBackend' } as const;
const SCOPE_KEYS = { imap: 'mailImapScopes', pop3: 'mailPop3Scopes', smtp: 'mailSmtpScopes' } as const;

/** What a mail protocol needs: from the policy (`protocol: imap` rules) when there is one, else `mail*Scopes`. */
type Requirement = { readonly effect: 'require'; readonly context: Pick<RequestContext, 'requiredScopes' | 'audience'> } | { readonly effect: 'deny'; readonly why: string };

function requirement(service: Service, protocol: MailProtocol): Requirement {
  // STUB until the policy engine lands on main: configuration only.
  return { effect: 'require', context: { requiredScopes: service.config[SCOPE_KEYS[protocol]] } };
}

// STUB until main exports isTrustedPeer (src/http/originalRequest.ts).
function trustedPeer(config: Config): (request: FastifyRequest) => boolean {
  if (config.trustedProxies.length === 0) return () => false;
  const trust = proxyAddr.compile([...config.trustedProxies]);
  return (request) => trust(request.socket.remoteAddress ?? '', 0);
}

/** `Auth-Pass` goes into an HTTP header that nginx copies byte for byte: visible ASCII only. */
function backendPassword(config: Config): string | undefined {
  const secret = config.mailBackendPassword;
  if (secret !== undefined && !/^[\x21-\x7e]+$/.test(secret)) {
    throw new ConfigError('invalid configuration: mailBackendPassword (CREDGATE_MAIL_BACKEND_PASSWORD) must be printable ASCII without spaces (nginx receives it in a header)', 'mailBackendPassword');
  }
  return secret;
}

/**
 * `GET /auth/mail`: nginx's mail proxy `auth_http` (IMAP, POP3, SMTP). Always HTTP 200: nginx reads
 * only the headers (see mailProtocol.ts). A login is verified like a Basic pair, needing the
 * protocol's scopes; any denial reads "Invalid login or password" with a growing `Auth-Wait`.
 * nginx's `Client-IP` is the end user's address (per-IP throttling) only when the peer is a trusted
 * proxy, and the backend secret (`mailBackendPassword`) is handed only to a trusted proxy.
 */
export function mailRoute(app: FastifyInstance, service: Service): void {
  const config = service.config;
  const secret = backendPassword(config);
  const isTrusted = trustedPeer(config);
  const backends: Partial<Record<MailProtocol, MailBackend>> = {};
  for (const [protocol, key] of Object.entries(BACKEND_KEYS) as [MailProtocol, (typeof BACKEND_KEYS)[MailProtocol]][]) {
    const value = config[key];
    if (value !== undefined) backends[protocol] = parseBackend(value);
  }
  const options: MailAnswerOptions = { maxAttempts: config.mailMaxAttempts, waitSeconds: config.mailWaitSeconds, smtpErrorCode: config.mailSmtpErrorCode };

  const answer = (reply: FastifyReply, protocol: MailProtocol | undefined, attempt: number, outcome: MailOutcome) =>
    reply.code(200).headers(renderMailAnswer(protocol, attempt, outcome, options)).header('cache-control', 'no-store').send();

  app.get('/auth/mail', async (request, reply) => {
    const login = parseMailRequest(headersByName(request.raw.rawHeaders), checkPair);
    if ('outcome' in login) {
      recordEarlyDenial(service, request, 'mail', login.reason, login.message);
      return answer(reply, login.protocol, login.attempt, login.outcome);
    }
    const { protocol, attempt } = login;
    const backend = backends[protocol];
    const trusted = isTrusted(request);
    // Deployment faults: the client is told to come back later, the operator is told what to fix.
    if (backend === undefined) {
      service.log.error({ requestId: request.id, interface: 'mail', protocol }, `no ${protocol} backend configured (${BACKEND_KEYS[protocol]}): ${protocol} logins are refused`);
      return answer(reply, protocol, attempt, { kind: 'unavailable', retry: false });
    }
    if (secret !== undefined && !trusted) {
      service.log.error({ requestId: request.id, interface: 'mail', clientIp: request.ip }, 'mailBackendPassword is set, so /auth/mail answers only trusted proxies: add nginx to trustedProxies');
      return answer(reply, protocol, attempt, { kind: 'unavailable', retry: false });
    }
    const needs = requirement(service, protocol);
    if (needs.effect === 'deny') {
      // STUB: reason becomes 'denied_by_policy' when the policy engine lands.
      recordEarlyDenial(service, request, 'mail', 'insufficient_scope', needs.why);
      return answer(reply, protocol, attempt, { kind: 'invalid' });
    }
    const endUserIp = trusted ? login.clientIp : undefined;
    const decision: Decision = await service.verifier.verify(
      { kind: 'basic', username: login.username, password: login.password },
      { ...needs.context, clientIp: endUserIp ?? request.ip, endUserIp },
      'mail',
      request.id,
    );
    return answer(reply, protocol, attempt, outcomeOf(decision, backend, secret));
  });
}

/** A verifier decision as nginx should hear it: only an allow names the backend; every denial reads the same. */
export function outcomeOf(decision: Decision, backend: MailBackend, backendPassword: string | undefined): MailOutcome {
  if (decision.allow) return { kind: 'ok', server: backend, backendPassword };
  if (decision.reason === 'throttled') return { kind: 'throttled', retryAfterSeconds: decision.retryAfterSeconds ?? 1 };
  if (decision.reason === 'upstream_unavailable') return { kind: 'unavailable', retry: true };
  return { kind: 'invalid' };
}
