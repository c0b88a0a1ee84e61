/**
 * A small fastify service that accepts legacy Basic credentials itself through `credgate/fastify`:
 * reading a repository needs `read:repo`, writing one `write:repo`; `/` needs nothing.
 */
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import { credgate, type CredgatePluginOptions } from 'credgate/fastify';

export async function buildExampleApp(options: CredgatePluginOptions, fastifyOptions: FastifyServerOptions = {}): Promise<FastifyInstance> {
  const app = Fastify(fastifyOptions);
  await app.register(credgate, options);

  // No `config.credgate`: public.
  app.get('/', async () => ({ service: 'fastify-basic example' }));

  app.get('/repos/:name', { config: { credgate: { scopes: ['read:repo'] } } }, async (request) => {
    const { name } = request.params as { name: string };
    // Only reached with a verified identity: the plugin answered 401/403/429/503 otherwise.
    return { repo: name, readBy: request.credgate };
  });

  app.put('/repos/:name', { config: { credgate: { scopes: ['write:repo'] } } }, async (request, reply) => {
    const { name } = request.params as { name: string };
    return reply.code(201).send({ repo: name, writtenBy: request.credgate });
  });

  // credgate's own metrics (credgate_decisions_total{interface="plugin"}, ...). In production, keep
  // them off the public listener.
  app.get('/metrics', async (_request, reply) => {
    const { registry } = app.credgate.service.metrics;
    return reply.header('content-type', registry.contentType).send(await registry.metrics());
  });

  // The public keys of the introspection client (private_key_jwt), for an AS that fetches them by URL.
  app.get('/.well-known/jwks.json', async () => app.credgate.service.keys?.jwks ?? { keys: [] });

  return app;
}
