import type { FastifyInstance } from 'fastify';
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
        await Promise.all([app.close(), metricsApp?.close(), adminApp?.close()]);
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

/** SIGTERM/SIGINT: stop accepting, let in-flight decisions finish, exit within `graceMs`. */
export function closeOnSignals(server: { close(): Promise<void> }, log: Logger, graceMs = 10_000): void {
  const stop = (signal: string) => {
    log.info({ signal }, 'shutting down');
    const timer = setTimeout(() => {
      log.error('shutdown took too long; exiting');
      process.exit(1);
    }, graceMs);
    timer.unref();
    server.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'error while shutting down');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
