import type { FastifyInstance } from 'fastify';
import type { Service } from '../../service.js';

/** `/healthz` (alive), `/readyz` (configuration, discovery, JWKS, client accepted) and `/.well-known/jwks.json`. */
export function operationsRoutes(app: FastifyInstance, service: Service): void {
  let retry: Promise<void> | undefined;
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    let status = service.health.status();
    if (!status.checks.discovery?.ok || !status.checks.jwks?.ok) {
      // Not ready because the AS was not reachable yet: the probe itself retries (one at a time).
      retry ??= service.warmUp().finally(() => (retry = undefined));
      await retry;
      status = service.health.status();
    }
    return reply.code(status.ready ? 200 : 503).send({ status: status.ready ? 'ready' : 'not_ready', checks: status.checks });
  });
  app.get('/.well-known/jwks.json', async (_request, reply) =>
    reply.header('cache-control', 'public, max-age=300').send(service.keys?.jwks ?? { keys: [] }),
  );
}

export function metricsRoute(app: FastifyInstance, service: Service): void {
  app.get('/metrics', async (_request, reply) =>
    reply.header('content-type', service.metrics.registry.contentType).send(await service.metrics.registry.metrics()),
  );
}
