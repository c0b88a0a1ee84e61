import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { sharesState, type Config } from './config/schema.js';
import { buildAdminApp, buildApp, buildMetricsApp } from './http/app.js';
import type { Logger } from './log.js';
import { createService, type Service, type ServiceConfig } from './service.js';
import type { ClientKeys } from './upstream/clientKeys.js';

export interface RunningServer {
  readonly service: Service;
  readonly app: FastifyInstance;
  /** `http://host:port` of the main listener. */
  readonly url: string;
  readonly metricsUrl: string | undefined;
  /** `http://127.0.0.1:port` of the admin listener, when `adminPort` and `adminToken` are set. */
  readonly adminUrl: string | undefined;
  /**
   * Graceful stop: `/readyz` fails at once and every answer asks for `Connection: close`; after
   * `shutdownDelayMs` the listeners stop accepting, in-flight decisions finish, idle connections
   * close; then the AS connection pool closes. Calling it again returns the same promise.
   */
  close(): Promise<void>;
}

function urlOf(app: FastifyInstance): string {
  const address = app.server.address();
  if (!address || typeof address === 'string') throw new Error('server is not listening on TCP');
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `http://${host === '0.0.0.0' ? '127.0.0.1' : host === '[::]' ? '[::1]' : host}:${address.port}`;
}

/** Starts credgate's listeners. Listening is kept apart from building the app (tests use `inject`). */
export async function startServer(config: ServiceConfig, log: Logger, options: { keys?: ClientKeys; defaultHost?: string } = {}): Promise<RunningServer> {
  const service = await createService(config, log, options);
  const separateMetrics = config.metricsPort !== undefined;
  const app = buildApp(service, { metricsOnMainPort: !separateMetrics });
  const metricsApp = separateMetrics ? buildMetricsApp(service) : undefined;
  // The admin API exists only with a token; with an admin port it is only there, on loopback.
  const adminApp = config.adminToken !== undefined && config.adminPort !== undefined ? buildAdminApp(service) : undefined;
  if (config.adminPort !== undefined && config.adminToken === undefined) log.warn('adminPort is set but adminToken is not: the admin API is off');
  if (config.passwordFailureBudget > 0 && config.ledgerFile === undefined && !sharesState(config)) {
    log.warn(`login-protection ledger kept in memory only: each restart gives an attacker another ${config.passwordFailureBudget - 2} guesses per account (set ledgerFile or redisUrl)`);
  }
  const host = config.host ?? options.defaultHost ?? '0.0.0.0';
  await app.listen({ host, port: config.port ?? 8080 });
  if (metricsApp) await metricsApp.listen({ host, port: config.metricsPort! });
  if (adminApp) await adminApp.listen({ host: '127.0.0.1', port: config.adminPort! });
  service.policy?.watch();
  await service.warmUp();
  let closing: Promise<void> | undefined;
  return {
    service,
    app,
    url: urlOf(app),
    metricsUrl: metricsApp ? urlOf(metricsApp) : undefined,
    adminUrl: adminApp ? urlOf(adminApp) : undefined,
    close() {
      closing ??= (async () => {
        service.health.shutDown();
        // Load balancers and Kubernetes endpoints take a moment to stop sending: keep serving meanwhile.
        if (config.shutdownDelayMs > 0) await sleep(config.shutdownDelayMs);
        const apps = [app, metricsApp, adminApp].filter((a) => a !== undefined);
        // Every decision under way has answered by its deadline; a connection still open after that
        // is a client sending slowly (or not at all), which must not hold the exit up.
        const force = setTimeout(() => apps.forEach((a) => a.server.closeAllConnections()), config.decisionTimeoutMs + 500);
        force.unref();
        await Promise.all(apps.map((a) => a.close()));
        clearTimeout(force);
        await service.close();
      })();
      return closing;
    },
  };
}

/** SIGHUP: reload the policy file (an invalid one is refused and the old policy stays). */
export function reloadOnHangup(service: Service): void {
  process.on('SIGHUP', () => {
    if (service.policy) service.policy.reload('SIGHUP');
    else service.log.info('SIGHUP: no policy file to reload');
  });
}

/**
 * SIGTERM/SIGINT: `server.close()` (readiness fails at once, serving goes on for `shutdownDelayMs`,
 * then the listeners stop accepting and in-flight decisions finish); exit 0 when done, or 1 if that
 * takes longer than `shutdownDelayMs + shutdownTimeoutMs`. A second signal is not caught: it ends
 * the process at once.
 */
export function closeOnSignals(server: { close(): Promise<void> }, log: Logger, config: Pick<Config, 'shutdownDelayMs' | 'shutdownTimeoutMs'>): void {
  const graceMs = config.shutdownDelayMs + config.shutdownTimeoutMs;
  const stop = (signal: string) => {
    const started = Date.now();
    log.info({ signal, shutdownDelayMs: config.shutdownDelayMs, shutdownTimeoutMs: config.shutdownTimeoutMs }, 'shutting down: not ready any more; finishing in-flight decisions');
    const timer = setTimeout(() => {
      log.error({ graceMs }, 'shutdown took too long; exiting');
      process.exit(1);
    }, graceMs);
    timer.unref();
    server.close().then(
      () => {
        log.info({ durationMs: Date.now() - started }, 'stopped');
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ err }, 'error while shutting down');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
