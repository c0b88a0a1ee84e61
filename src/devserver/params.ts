import type { FastifyInstance, FastifyReply } from 'fastify';

/** An OAuth error answer: `{"error", "error_description", ...extra}` with an HTTP status (RFC 6749 §5.2). */
export class OAuthError extends Error {
  constructor(
    readonly statusCode: number,
    readonly error: string,
    readonly description: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(description);
    this.name = 'OAuthError';
  }
}

export function sendOAuthError(reply: FastifyReply, e: OAuthError): FastifyReply {
  return reply
    .code(e.statusCode)
    .header('cache-control', 'no-store')
    .send({ error: e.error, error_description: e.description, ...e.extra });
}

export type Params = Readonly<Record<string, unknown>>;

/**
 * Form bodies become a plain record. A repeated parameter is refused: RFC 6749 §3.1 and §3.2
 * say request parameters MUST NOT be included more than once.
 */
export function parseForm(body: string): Record<string, string> {
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const [name, value] of new URLSearchParams(body)) {
    if (Object.hasOwn(out, name)) throw new OAuthError(400, 'invalid_request', `Parameter ${name} is repeated`);
    out[name] = value;
  }
  return out;
}

export function registerFormParser(app: FastifyInstance): void {
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(null, parseForm(typeof body === 'string' ? body : body.toString('utf8')));
    } catch (err) {
      done(err as Error, undefined);
    }
  });
}

/** The request body as parameters; no body is no parameters; arrays and scalars are refused. */
export function asParams(body: unknown): Params {
  if (body === undefined || body === null) return {};
  if (typeof body !== 'object' || Array.isArray(body)) {
    throw new OAuthError(400, 'invalid_request', 'The request body must be an object');
  }
  return body as Params;
}

/** A string parameter; absent and empty are both undefined; any other type is refused. */
export function stringParam(params: Params, name: string): string | undefined {
  const value = params[name];
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value !== 'string') throw new OAuthError(400, 'invalid_request', `Parameter ${name} must be a string`);
  return value;
}

/** Decodes an HTTP Basic header; client id and secret are form-encoded first (RFC 6749 §2.3.1). */
export function parseBasicClient(header: string | undefined): { id: string; secret: string } | undefined {
  if (header === undefined) return undefined;
  const match = /^Basic[ ]+([A-Za-z0-9+/=._~-]+)[ ]*$/i.exec(header);
  if (match?.[1] === undefined) return undefined;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  try {
    const formDecode = (s: string): string => decodeURIComponent(s.replace(/\+/g, ' '));
    return { id: formDecode(decoded.slice(0, colon)), secret: formDecode(decoded.slice(colon + 1)) };
  } catch {
    return undefined;
  }
}
