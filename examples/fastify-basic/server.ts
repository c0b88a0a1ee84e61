/**
 * Runs the example: credgate's configuration comes from the environment, as for `credgate serve`
 * (CREDGATE_ISSUER, CREDGATE_AUDIENCE, CREDGATE_CLIENT_ID, CREDGATE_CLIENT_SECRET,
 * CREDGATE_INTROSPECTION_KEY_FILE or CREDGATE_INTROSPECTION_CLIENT_SECRET, ...).
 * The example listens on EXAMPLE_HOST:EXAMPLE_PORT (default 127.0.0.1:3000).
 */
import { loadConfig } from 'credgate/fastify';
import { buildExampleApp } from './app.js';

const app = await buildExampleApp({ config: loadConfig() });
await app.listen({ host: process.env.EXAMPLE_HOST ?? '127.0.0.1', port: Number(process.env.EXAMPLE_PORT ?? 3000) });
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void app.close());
