/**
 * The request target, parsed once from the bytes the client sent (the raw request line, or the
 * trusted proxy's `X-Original-URI` / `X-Forwarded-Uri`, never a router-decoded parameter), with one
 * normalisation for every interface.
 *
 * credgate must approve exactly what the backend will serve, and backends read paths differently:
 * nginx `proxy_pass` without a URI and Caddy pass the raw path on, some frameworks decode twice,
 * Tomcat and Spring drop `;` parameters, IIS and some Windows stacks take `\` for `/`. So a target
 * that two servers could read as two different resources is not normalised into one guess but
 * refused as ambiguous:
 * - dot segments in any spelling (`.`, `..`, `%2e`, `.%2E`, ...), anywhere in the path;
 * - an encoded `/`, `\`, `;`, `?`, `#` or `%` (`%2F`, `%5c`, `%3B`, `%3f`, `%23`, `%25`: a second decoding would change the path);
 * - a raw `\`, `;` or `#`, an empty segment (`//`), NUL or any control character (raw or encoded), whitespace;
 * - broken percent-encoding, or escapes that do not decode to UTF-8.
 * What remains has one meaning: percent-escapes of other characters are decoded for matching
 * (`/%61dmin` is `/admin`, as every backend reads it).
 */
export interface RequestTarget {
  /** The decoded path, starting with `/`. */
  readonly path: string;
  readonly query: URLSearchParams;
  /**
   * Why backends could split the query into other parameters than `query` holds, if they could
   * (`queryAmbiguity`). Refused only by a policy that matches on query parameters: elsewhere the
   * query decides nothing.
   */
  readonly queryAmbiguity?: string;
}

export type ParsedTarget = { readonly ok: true; readonly target: RequestTarget } | { readonly ok: false; readonly why: string };

const MAX_TARGET = 8192;
// eslint-disable-next-line no-control-regex
const RAW_FORBIDDEN = /[\x00-\x20\x7f-\uffff\\;#]/;
// eslint-disable-next-line no-control-regex
const DECODED_FORBIDDEN = /[\x00-\x1f\x7f/\\;?#%]/;
const BAD_ESCAPE = /%(?![0-9A-Fa-f]{2})/;

const refuse = (why: string): ParsedTarget => ({ ok: false, why });

export function parseTarget(raw: string): ParsedTarget {
  if (raw.length > MAX_TARGET) return refuse('the target is longer than 8192 characters');
  let target = raw;
  // absolute-form (RFC 9112 §3.2.2): the path starts after the authority. Not parsed with URL(),
  // which would resolve dot segments and so hide them.
  const absolute = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#]*/.exec(target);
  if (absolute) target = target.slice(absolute[0].length) || '/';
  const q = target.indexOf('?');
  const rawPath = q >= 0 ? target.slice(0, q) : target;
  const rawQuery = q >= 0 ? target.slice(q + 1) : '';
  if (!rawPath.startsWith('/')) return refuse('the path does not start with /');
  if (RAW_FORBIDDEN.test(rawPath)) return refuse('the path holds whitespace, a control or non-ASCII byte, or a raw \\ ; or #');
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x20\x7f#]/.test(rawQuery)) return refuse('the query holds whitespace, a control character or #');
  if (BAD_ESCAPE.test(rawPath) || BAD_ESCAPE.test(rawQuery)) return refuse('broken percent-encoding');

  const segments = rawPath.slice(1).split('/');
  const decoded: string[] = [];
  for (let i = 0; i < segments.length; i++) {
    const encoded = segments[i]!;
    if (encoded === '' && i < segments.length - 1) return refuse('an empty path segment (//)');
    let segment: string;
    try {
      segment = decodeURIComponent(encoded);
    } catch {
      return refuse('percent-escapes that are not UTF-8');
    }
    if (segment === '.' || segment === '..') return refuse('a dot segment (. or .., in any spelling)');
    if (DECODED_FORBIDDEN.test(segment)) return refuse('an encoded / \\ ; ? # % or control character in a path segment');
    decoded.push(segment);
  }
  let query: URLSearchParams;
  try {
    // URLSearchParams decodes leniently; the strict check above already refused broken escapes.
    query = new URLSearchParams(rawQuery);
    for (const [k, v] of query) if (/[\x00-\x1f\x7f]/.test(k + v)) return refuse('an encoded control character in the query'); // eslint-disable-line no-control-regex
  } catch {
    return refuse('an unreadable query');
  }
  const queryAmbiguity = ambiguousQuery(rawQuery);
  return { ok: true, target: { path: '/' + decoded.join('/'), query, ...(queryAmbiguity === undefined ? {} : { queryAmbiguity }) } };
}

/**
 * Why servers could read this query as other parameters than URLSearchParams does, if they could:
 * - a name without `=` (`?service&git-receive-pack`): git's http-backend reads the next piece as its
 *   value (`service=git-receive-pack`), URLSearchParams two empty parameters;
 * - an empty piece (`?a=1&&service=x`, `?&service=x`): git reads `service=x` as the value of an
 *   empty name;
 * - a `;`, which some servers take for `&`;
 * - an encoded `&`, `=` or `;`, which a server that decodes before it splits reads as a separator.
 * Never names the parameter: a query can carry a token.
 */
function ambiguousQuery(rawQuery: string): string | undefined {
  if (rawQuery === '') return undefined;
  if (rawQuery.includes(';')) return 'the query holds a ;, which some servers read as &';
  if (/%(?:26|3[bBdD])/.test(rawQuery)) return 'the query holds an encoded & = or ;, which a server that decodes first reads as a separator';
  const pieces = rawQuery.split('&');
  for (let i = 0; i < pieces.length; i++) {
    const piece = pieces[i]!;
    if (piece === '' && i < pieces.length - 1) return 'the query holds an empty parameter (&& or a leading &), which servers split differently';
    if (piece !== '' && !piece.includes('=')) return 'a query parameter has no =: servers read "a&b" differently (git takes it for a=b)';
  }
  return undefined;
}
