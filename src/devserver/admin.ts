import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { DevContext } from './context.js';
import { OAuthError } from './params.js';
import type { AppPasswordOptions, DevStats } from './types.js';

/** The operations the admin API exposes; implemented once, in index.ts, for the JS API too. */
export interface AdminOperations {
  createAppPassword(username: string, o: AppPasswordOptions): { id: string; password: string };
  stats(): DevStats;
  unblock(username: string): void;
}

const CreateAppPasswordBody = z
  .object({
    scope: z.string().max(2000).optional(),
    audience: z.string().min(1).max(2000).optional(),
    expiresInSeconds: z.number().int().min(-31_536_000).max(315_360_000).optional(),
  })
  .strict();

const LOOPBACK = /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|::1|::ffff:127\.\d{1,3}\.\d{1,3}\.\d{1,3})$/;

const notFound = (what: string): OAuthError => new OAuthError(404, 'not_found', `${what} not found`);

/** Dev-only admin API behind the README's curl examples. Loopback callers only. */
export function registerAdminApi(app: FastifyInstance, ctx: DevContext, ops: AdminOperations): void {
  app.register(
    async (admin) => {
      admin.addHook('onRequest', async (request) => {
        if (!LOOPBACK.test(request.socket.remoteAddress ?? '')) {
          throw new OAuthError(403, 'access_denied', 'The dev admin API answers loopback callers only');
        }
      });

      admin.post<{ Params: { username: string } }>('/users/:username/app-passwords', async (request, reply) => {
        const parsed = CreateAppPasswordBody.safeParse(request.body ?? {});
        if (!parsed.success) throw new OAuthError(400, 'invalid_request', 'Expected {scope?, audience?, expiresInSeconds?}');
        if (ctx.users.find(request.params.username) === undefined) throw notFound('User');
        const o: AppPasswordOptions = {};
        if (parsed.data.scope !== undefined) o.scope = parsed.data.scope;
        if (parsed.data.audience !== undefined) o.audience = parsed.data.audience;
        if (parsed.data.expiresInSeconds !== undefined) o.expiresInSeconds = parsed.data.expiresInSeconds;
        return reply.code(201).header('cache-control', 'no-store').send(ops.createAppPassword(request.params.username, o));
      });

      admin.get<{ Params: { username: string } }>('/users/:username/app-passwords', async (request) => {
        const user = ctx.users.find(request.params.username);
        if (user === undefined) throw notFound('User');
        return ctx.tokens.appPasswordsOf(user.sub).map((r) => ({
          id: r.id,
          scope: r.scope,
          audience: r.audience,
          createdAt: new Date(r.createdAt).toISOString(),
          expiresAt: r.expiresAt === undefined ? null : new Date(r.expiresAt).toISOString(),
        }));
      });

      admin.delete<{ Params: { id: string } }>('/app-passwords/:id', async (request, reply) => {
        if (!ctx.tokens.revoke(request.params.id)) throw notFound('App password');
        return reply.code(204).send();
      });

      admin.get('/stats', async () => ops.stats());

      admin.post<{ Params: { username: string } }>('/users/:username/unblock', async (request, reply) => {
        ops.unblock(request.params.username);
        return reply.code(204).send();
      });
    },
    { prefix: '/dev' },
  );
}
