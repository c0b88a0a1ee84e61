import underPressure from '@fastify/under-pressure';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Service } from '../service.js';
import { loginAttempt, MAIL_PROTOCOLS, renderMailAnswer } from './mailProtocol.js';

/** Operational routes stay answered under pressure: liveness must not restart a merely busy
 * process, readiness says "overloaded" itself, and metrics are most needed exactly then. */
const ALWAYS_ANSWERED = new Set(['/healthz', '/readyz', '/metrics', '/.well-known/jwks.json']);
const RETRY_AFTER_SECONDS = 5;

/**
 * @fastify/under-pressure on the main listener: when the event loop lags more than
 * `maxEventLoopDelayMs` (mean over the last second) or the heap holds more than
 * `maxHeapUsedBytes`, decision requests are answered 503 at once, in each interface's own
 * terms, instead of queueing until every client times out and the process falls over.
 * Never an allow: `/auth` 503 with Retry-After, `/v1/verify` the `upstream_unavailable`
 * decision, `/auth/mail` nginx's "temporary problem" with `Auth-Wait`.
 */
export function shedLoad(app: FastifyInstance, service: Service): void {
  const { maxEventLoopDelayMs, maxHeapUsedBytes } = service.config;
  if (maxEventLoopDelayMs === 0 && maxHeapUsedBytes === 0) return;
  const mailOptions = { maxAttempts: service.config.mailMaxAttempts, waitSeconds: service.config.mailWaitSeconds, smtpErrorCode: service.config.mailSmtpErrorCode };

  /** Sets the status and headers and returns the body (under-pressure sends it). */
  const refusal = (request: FastifyRequest, reply: FastifyReply): string | Record<string, unknown> => {
    reply.code(503).header('retry-after', String(RETRY_AFTER_SECONDS)).header('cache-control', 'no-store');
    const url = request.routeOptions.url;
    if (url === '/auth/mail') {
      const raw = request.headers['auth-protocol'];
      const protocol = MAIL_PROTOCOLS.find((p) => p === (typeof raw === 'string' ? raw.trim().toLowerCase() : undefined));
      const attempt = loginAttempt(typeof request.headers['auth-login-attempt'] === 'string' ? request.headers['auth-login-attempt'] : undefined);
      reply.headers(renderMailAnswer(protocol, attempt, { kind: 'unavailable', retry: true }, mailOptions));
      return '';
    }
    if (url === '/v1/verify') return { allow: false, status: 503, reason: 'upstream_unavailable', cached: false };
    return { reason: 'upstream_unavailable', message: 'credgate is overloaded; try again shortly' };
  };

  void app.register(underPressure, {
    maxEventLoopDelay: maxEventLoopDelayMs,
    maxHeapUsedBytes,
    retryAfter: RETRY_AFTER_SECONDS,
    pressureHandler: (request, reply, type) => {
      if (ALWAYS_ANSWERED.has(request.routeOptions.url ?? '')) return; // let it through
      service.metrics.loadShed.inc({ cause: type === underPressure.TYPE_HEAP_USED_BYTES ? 'heap' : 'event_loop_delay' });
      request.log.warn({ requestId: request.id, pressure: type }, 'overloaded: request refused (503)');
      // A value returned (rather than undefined) is what under-pressure sends instead of the route.
      return refusal(request, reply) as never;
    },
  });
  app.after(() => {
    service.health.watchPressure(() => {
      if (typeof app.isUnderPressure !== 'function' || !app.isUnderPressure()) return undefined;
      const usage = app.memoryUsage();
      return `overloaded: event-loop delay ${Math.round(usage.eventLoopDelay)} ms (limit ${maxEventLoopDelayMs || 'none'}), heap ${Math.round(usage.heapUsed / 2 ** 20)} MiB (limit ${maxHeapUsedBytes ? Math.round(maxHeapUsedBytes / 2 ** 20) + ' MiB' : 'none'})`;
    });
  });
}
