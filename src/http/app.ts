import { randomUUID } from 'node:crypto';
import { ServerResponse, type IncomingMessage } from 'node:http';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Service } from '../service.js';
import { installErrorHandlers } from './errors.js';
import { watchLoad } from './loadShedding.js';
import { adminRoutes } from './routes/admin.js';
import { authRoute } from './routes/auth.js';
import { mailRoute } from './routes/mail.js';
import { metricsRoute, operationsRoutes } from './routes/operations.js';
import { verifyRoute } from './routes/verify.js';

/** Limits against oversized and slow clients. Credentials fit easily; nothing legitimate is larger. */
export const BODY_LIMIT_BYTES = 16 * 1024;
/** Request headers, all together (Node's default, made explicit): more is 431. */
export const HEADER_LIMIT_BYTES = 16 * 1024;

/**
 * Node's response class with one change: while shutting down, every answer asks for
 * `Connection: close` (also answers to requests already under way when shutdown began), so that
 * clients stop reusing connections before the listener closes them. Decided where Node writes the
 * status line rather than in a fastify `onSend` hook: a hook runs for every request and takes it off
 * fastify's hook-free path (issue #17), this is one property read per answer.
 */
function responseClass(service: Service): typeof ServerResponse {
  class CredgateResponse<Request extends IncomingMessage = IncomingMessage> extends ServerResponse<Request> {}
  const writeHead = ServerResponse.prototype.writeHead;
  CredgateResponse.prototype.writeHead = function (this: ServerResponse, ...args: unknown[]) {
    if (service.health.shuttingDown) this.shouldKeepAlive = false;
    return Reflect.apply(writeHead, this, args) as ServerResponse;
  };
  return CredgateResponse;
}

/**
 * A fastify instance with credgate's logger and limits; every listener (main, metrics, admin)
 * starts here. Against slow clients: `clientTimeoutMs` to send the headers and the whole request,
 * an idle socket closed after three times that, idle keep-alive connections after
 * `keepAliveTimeoutMs`. While shutting down, every answer carries `Connection: close` (responseClass).
 * No global hooks: whatever one costs, every request pays it.
 */
function baseApp(service: Service): FastifyInstance {
  const { clientTimeoutMs, keepAliveTimeoutMs } = service.config;
  const app = Fastify({
    loggerInstance: service.log as FastifyBaseLogger,
    // credgate logs one line per decision itself; fastify's per-request lines would double them.
    logController: new LogController({ disableRequestLogging: true }),
    // No per-request child logger (a pino child per request costs more than a cached decision's
    // own work): lines that concern a request carry `requestId` themselves.
    childLoggerFactory: (logger) => logger,
    genReqId: () => randomUUID(),
    bodyLimit: BODY_LIMIT_BYTES,
    requestTimeout: clientTimeoutMs,
    connectionTimeout: clientTimeoutMs * 3,
    keepAliveTimeout: keepAliveTimeoutMs,
    // Node enforces the request and headers timeouts only when it checks (every 30 s by default).
    http: { maxHeaderSize: HEADER_LIMIT_BYTES, connectionsCheckingInterval: Math.min(1000, clientTimeoutMs), ServerResponse: responseClass(service) },
    return503OnClosing: true,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    routerOptions: { maxParamLength: 200 },
  });
  app.server.headersTimeout = clientTimeoutMs;
  installErrorHandlers(app);
  return app;
}

/** Builds the HTTP application (no listening: `main` does that, tests use `inject`). */
export function buildApp(service: Service, options: { metricsOnMainPort: boolean }): FastifyInstance {
  const app = baseApp(service);
  // Only the decision routes shed load (loadShedding.ts): they read the gauge themselves.
  const load = watchLoad(app, service);
  authRoute(app, service, load);
  mailRoute(app, service, load);
  verifyRoute(app, service, load);
  operationsRoutes(app, service);
  if (options.metricsOnMainPort) metricsRoute(app, service);
  // Without an admin port, the admin API shares the main listener but answers loopback peers only.
  if (service.config.adminToken !== undefined && service.config.adminPort === undefined) adminRoutes(app, service, { loopbackOnly: true });
  return app;
}

/** The separate `/metrics` listener used when `metricsPort` is set. */
export function buildMetricsApp(service: Service): FastifyInstance {
  const app = baseApp(service);
  metricsRoute(app, service);
  return app;
}

/** The separate admin listener (bound to loopback by `main`) used when `adminPort` and `adminToken` are set. */
export function buildAdminApp(service: Service): FastifyInstance {
  const app = baseApp(service);
  adminRoutes(app, service);
  return app;
}
