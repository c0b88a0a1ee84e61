/**
 * The request target split and normalised the way the protected server will read it, so that a
 * rule cannot be dodged by spelling one path another way (`/a/../b`, `%2e%2e`, `//`, `%61`).
 * A target whose meaning is ambiguous — an encoded `/` or `\` inside a segment, a NUL or other
 * control character, broken percent-encoding — yields `undefined`, and the policy denies it.
 */
export interface RequestTarget {
  readonly path: string;
  readonly query: URLSearchParams;
}

export function parseTarget(uri: string): RequestTarget | undefined {
  // A request-target holds no whitespace or control characters (RFC 9112 §3.2); one that does is
  // not what the client sent (two header values joined by a proxy, say).
  if (/[\s\x00-\x1f\x7f]/.test(uri)) return undefined;
  let target = uri;
  if (/^https?:\/\//i.test(target)) {
    // absolute-form (RFC 9112 §3.2.2): only the path and query matter here.
    try {
      const url = new URL(target);
      target = url.pathname + url.search;
    } catch {
      return undefined;
    }
  }
  const hash = target.indexOf('#');
  if (hash >= 0) target = target.slice(0, hash);
  const q = target.indexOf('?');
  const rawPath = q >= 0 ? target.slice(0, q) : target;
  const path = normalisePath(rawPath);
  if (path === undefined) return undefined;
  return { path, query: new URLSearchParams(q >= 0 ? target.slice(q + 1) : '') };
}

/** RFC 3986 §5.2.4 dot-segment removal on percent-decoded segments; repeated slashes collapse. */
export function normalisePath(raw: string): string | undefined {
  if (!raw.startsWith('/') || raw.length > 8192) return undefined;
  const out: string[] = [];
  const segments = raw.split('/').slice(1);
  for (const encoded of segments) {
    let segment: string;
    try {
      segment = decodeURIComponent(encoded);
    } catch {
      return undefined;
    }
    // An encoded separator or a control character means different things to different servers.
    if (/[/\\\x00-\x1f\x7f]/.test(segment)) return undefined;
    if (segment === '' || segment === '.') continue;
    if (segment === '..') {
      out.pop();
      continue;
    }
    out.push(segment);
  }
  const last = segments[segments.length - 1];
  const trailingSlash = out.length > 0 && (last === '' || last === '.' || last === '..');
  return '/' + out.join('/') + (trailingSlash ? '/' : '');
}
