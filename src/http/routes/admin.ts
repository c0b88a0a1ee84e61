import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Service } from '../../service.js';
import { checkUsername, MAX_USERNAME_BYTES } from '../credentials.js';
import { badRequest } from '../errors.js';

/** `POST /admin/purge` body: a login name or an AS subject (one of them). Unknown fields are refused, as on `/v1/verify`. */
const purgeRequest = z
  .object({ username: z.string().max(MAX_USERNAME_BYTES).optional(), subject: z.string().min(1).max(MAX_USERNAME_BYTES).optional() })
  .strict()
  .refine((b) => (b.username === undefined) !== (b.subject === undefined), 'give exactly one of username or subject');

// RFC 6750 §2.1: "Bearer" 1*SP b64token (the scheme name is case-insensitive, RFC 7235 §2.1).
const BEARER = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i;

/** 127.0.0.0/8, ::1 and IPv4-mapped 127.x: the connection comes from this host. */
export function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  return address === '::1' || /^127\./.test(address) || /^::ffff:127\./i.test(address);
}

const sha256 = (value: string) => createHash('sha256').update(value, 'utf8').digest();

/**
 * Whether `Authorization` carries the admin token. Both sides are hashed first so that
 * `timingSafeEqual` compares equal lengths and neither the token's length nor a common prefix leaks.
 */
function hasAdminToken(header: string | string[] | undefined, adminToken: string): boolean {
  if (typeof header !== 'string') return false;
  const presented = BEARER.exec(header)?.[1];
  return presented !== undefined && timingSafeEqual(sha256(presented), sha256(adminToken));
}

/**
 * The admin API: `POST /admin/purge {"username"}` or `{"subject"}` purges one account (after an ASP is
 * revoked or a password changed, or to lift login protection): every cached decision under any name
 * the account was seen with, and its ledger. Answers `{"purged": N, "names": M}` (with `redisUrl`,
 * also `"broadcast"`: whether the other replicas were told now). Registered only when
 * `adminToken` is set. `loopbackOnly` (on the main listener) answers connections from other hosts
 * with the ordinary 404, before authentication or body parsing, as if the route did not exist.
 */
export function adminRoutes(app: FastifyInstance, service: Service, options: { loopbackOnly: boolean } = { loopbackOnly: false }): void {
  const adminToken = service.config.adminToken;
  if (adminToken === undefined) throw new Error('adminRoutes needs config.adminToken');

  // onRequest runs before the body is read: strangers learn nothing, not even about their JSON.
  const guard = async (request: FastifyRequest, reply: FastifyReply) => {
    if (options.loopbackOnly && !isLoopback(request.socket.remoteAddress)) return reply.callNotFound();
    if (!hasAdminToken(request.headers.authorization, adminToken)) {
      service.log.warn({ requestId: request.id, clientIp: request.ip, route: request.url }, 'admin request refused: missing or wrong token');
      return reply.code(401).header('www-authenticate', 'Bearer realm="credgate-admin"').header('cache-control', 'no-store').send({ error: 'unauthorized' });
    }
  };

  app.post('/admin/purge', { onRequest: guard }, async (request, reply) => {
    const parsed = purgeRequest.safeParse(request.body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      const where = issue.code === 'unrecognized_keys' ? `unknown field(s) ${issue.keys.join(', ')}` : `${issue.path.join('.') || 'body'}: ${issue.message}`;
      return badRequest(reply, 'malformed_request', where);
    }
    const { username, subject } = parsed.data;
    const problem = checkUsername(username ?? subject!);
    if (problem) return badRequest(reply, 'malformed_request', problem.replace('username', username === undefined ? 'subject' : 'username'));
    const { purged, names, broadcast } = await service.purge({ username, subject });
    service.metrics.purges.inc();
    service.log.info({ requestId: request.id, username, subject, purged, names, broadcast }, 'purged the account: cached decisions of every alias, and its login-protection ledger');
    if (broadcast === false) service.log.warn({ requestId: request.id, username, subject }, 'purge not broadcast (shared state unreachable): other replicas are told once redis is back');
    return reply.header('cache-control', 'no-store').send(broadcast === undefined ? { purged, names } : { purged, names, broadcast });
  });
}
