import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Service } from '../service.js';
import { loginAttempt, MAIL_PROTOCOLS, renderMailAnswer } from './mailProtocol.js';

export type PressureCause = 'event_loop_delay' | 'heap';

/** Whether the process sheds load now: `cause` is undefined while it does not. */
export interface LoadGauge {
  readonly cause: PressureCause | undefined;
}

/** A gauge that never reports pressure (load shedding off, or an adapter tested on its own). */
export const NEVER_OVERLOADED: LoadGauge = Object.freeze({ cause: undefined });

const RETRY_AFTER_SECONDS = 5;
/** How often the event-loop delay and the heap are sampled (the delay is the mean over this period). */
const SAMPLE_MS = 1000;
/** Resolution of the event-loop delay histogram, ms; subtracted from its mean, as @fastify/under-pressure does. */
const RESOLUTION_MS = 10;

/**
 * Load shedding on the main listener: when the event loop lags more than `maxEventLoopDelayMs`
 * (mean over the last second) or the heap holds more than `maxHeapUsedBytes`, decision requests
 * are answered 503 at once, in each interface's own terms, instead of queueing until every client
 * times out and the process falls over. Never an allow: `/auth` 503 with Retry-After, `/v1/verify`
 * the `upstream_unavailable` decision, `/auth/mail` nginx's "temporary problem" with `Auth-Wait`.
 *
 * The same measurement as @fastify/under-pressure (which credgate used before, issue #17), but
 * read by the decision routes themselves (one property read at the top of their handlers) rather
 * than by a global `onRequest` hook: a hook takes every request off fastify's hook-free fast path,
 * and the routes that are always answered (`/healthz`, `/readyz`, `/metrics`, the JWKS, 404s)
 * had to be let through by name. Only decisions can pile up waiting for the AS, so only they shed.
 */
export function watchLoad(app: FastifyInstance, service: Service): LoadGauge {
  const { maxEventLoopDelayMs, maxHeapUsedBytes } = service.config;
  if (maxEventLoopDelayMs === 0 && maxHeapUsedBytes === 0) return NEVER_OVERLOADED;
  const histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  histogram.enable();
  const gauge = { cause: undefined as PressureCause | undefined, eventLoopDelayMs: 0, heapUsed: 0 };
  const sample = () => {
    const delay = histogram.mean / 1e6 - RESOLUTION_MS;
    // No sample within the period (a loop blocked for all of it): as bad as it gets.
    gauge.eventLoopDelayMs = Number.isNaN(delay) ? Infinity : Math.max(0, delay);
    histogram.reset();
    gauge.heapUsed = process.memoryUsage().heapUsed;
    gauge.cause =
      maxEventLoopDelayMs > 0 && gauge.eventLoopDelayMs > maxEventLoopDelayMs ? 'event_loop_delay' : maxHeapUsedBytes > 0 && gauge.heapUsed > maxHeapUsedBytes ? 'heap' : undefined;
  };
  const timer = setInterval(sample, SAMPLE_MS);
  timer.unref();
  app.addHook('onClose', (_app, done) => {
    clearInterval(timer);
    histogram.disable();
    done();
  });
  service.health.watchPressure(() =>
    gauge.cause === undefined
      ? undefined
      : `overloaded: event-loop delay ${Math.round(gauge.eventLoopDelayMs)} ms (limit ${maxEventLoopDelayMs || 'none'}), heap ${Math.round(gauge.heapUsed / 2 ** 20)} MiB (limit ${maxHeapUsedBytes ? Math.round(maxHeapUsedBytes / 2 ** 20) + ' MiB' : 'none'})`,
  );
  return gauge;
}

/**
 * Answers a decision request 503 at once because the process is overloaded (`gauge.cause` is set),
 * in the terms of the route's interface; counted and logged.
 */
export function refuseOverloaded(service: Service, cause: PressureCause, request: FastifyRequest, reply: FastifyReply, iface: 'auth' | 'verify' | 'mail'): FastifyReply {
  service.metrics.loadShed.inc({ cause });
  request.log.warn({ requestId: request.id, pressure: cause === 'heap' ? 'heapUsedBytes' : 'eventLoopDelay' }, 'overloaded: request refused (503)');
  reply.code(503).header('retry-after', String(RETRY_AFTER_SECONDS)).header('cache-control', 'no-store');
  if (iface === 'mail') {
    const raw = request.headers['auth-protocol'];
    const protocol = MAIL_PROTOCOLS.find((p) => p === (typeof raw === 'string' ? raw.trim().toLowerCase() : undefined));
    const attempt = loginAttempt(typeof request.headers['auth-login-attempt'] === 'string' ? request.headers['auth-login-attempt'] : undefined);
    const mailOptions = { maxAttempts: service.config.mailMaxAttempts, waitSeconds: service.config.mailWaitSeconds, smtpErrorCode: service.config.mailSmtpErrorCode };
    return reply.headers(renderMailAnswer(protocol, attempt, { kind: 'unavailable', retry: true }, mailOptions)).send('');
  }
  if (iface === 'verify') return reply.send({ allow: false, status: 503, reason: 'upstream_unavailable', cached: false });
  return reply.send({ reason: 'upstream_unavailable', message: 'credgate is overloaded; try again shortly' });
}
