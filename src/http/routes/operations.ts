import type { FastifyInstance } from 'fastify';
import type { Service } from '../../service.js';

/** Longest `/readyz` waits for the AS when discovery or the JWKS is not loaded yet (Kubernetes probes time out after 1 s by default). */
const READINESS_WAIT_MS = 900;

/** `/healthz` (alive), `/readyz` (configuration, discovery, JWKS, client accepted) and `/.well-known/jwks.json`. */
export function operationsRoutes(app: FastifyInstance, service: Service): void {
  let retry: Promise<void> | undefined;
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    let status = service.health.status();
    if ((!status.checks.discovery?.ok || !status.checks.jwks?.ok) && !service.health.shuttingDown) {
      // Not ready because the AS was not reachable yet: the probe itself retries (one at a time),
      // but answers within READINESS_WAIT_MS whatever the AS does (probes have short timeouts).
      retry ??= service.warmUp().finally(() => (retry = undefined));
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([retry, new Promise<void>((resolve) => (timer = setTimeout(resolve, READINESS_WAIT_MS)))]);
      clearTimeout(timer);
      status = service.health.status();
    }
    return reply.code(status.ready ? 200 : 503).send({ status: status.ready ? 'ready' : 'not_ready', checks: status.checks });
  });
  app.get('/.well-known/jwks.json', async (_request, reply) =>
    reply.header('cache-control', 'public, max-age=300').send(service.jwks),
  );
}

export function metricsRoute(app: FastifyInstance, service: Service): void {
  app.get('/metrics', async (_request, reply) =>
    reply.header('content-type', service.metrics.registry.contentType).send(await service.metrics.registry.metrics()),
  );
}
