import picomatch from 'picomatch';
import type { ScopeStrategy } from '../vocabulary.js';
import type { IdentityTokenSpec } from '../identity/tokens.js';
import type { RequestTarget } from './target.js';
import type { PolicyDocument, Protocol, RuleDocument } from './schema.js';

export type { Protocol } from './schema.js';
export type { ScopeStrategy } from '../vocabulary.js';

/** The original request, as far as credgate knows it; `target` already parsed (target.ts), undefined when unknown. */
export interface PolicyRequest {
  readonly protocol: Protocol;
  readonly method?: string;
  readonly host?: string;
  readonly target?: RequestTarget;
}

export type PolicyVerdict =
  | {
      readonly effect: 'require';
      /** The rule that matched; `default` for the policy's default. */
      readonly rule: string;
      /** Undefined: the configured audience. */
      readonly audience: string | undefined;
      readonly scopes: readonly string[];
      readonly scopeStrategy: ScopeStrategy;
      /** A signed identity token to hand the service behind it, if the rule (or the policy) asks for one. */
      readonly identityToken?: IdentityTokenSpec;
    }
  | { readonly effect: 'deny'; readonly rule: string | undefined; readonly why: string };

/** What `/auth`, `/auth/mail` and the CLI ask; the store swaps the policy behind it on reload. */
export interface PolicyDecider {
  evaluate(request: PolicyRequest): PolicyVerdict;
}

type Test = (request: Prepared) => boolean;

interface Prepared {
  readonly protocol: Protocol;
  readonly method: string | undefined;
  readonly host: string | undefined;
  readonly path: string | undefined;
  /** `path` without a trailing `/`: what the loose tests match (see `compileMatch`). */
  readonly loosePath: string | undefined;
  readonly query: URLSearchParams | undefined;
}

interface CompiledRule {
  readonly name: string;
  readonly tests: readonly Test[];
  /** The same match read case-insensitively and ignoring a trailing `/` (`compileMatch`'s `loose`). */
  readonly looseTests: readonly Test[];
  readonly verdict: PolicyVerdict;
}

const GLOB_OPTIONS = { dot: true, strictSlashes: false } as const;

/** A rule's own identity token, else the policy's default, unless the rule says `false`. */
function tokenFor(own: IdentityTokenSpec | false | undefined, fallback: IdentityTokenSpec | undefined): { identityToken?: IdentityTokenSpec } {
  const spec = own === false ? undefined : (own ?? fallback);
  return spec === undefined ? {} : { identityToken: spec };
}

/** `Git.Example.com:443` → `git.example.com`; `[::1]:8080` → `::1`. */
export function hostname(host: string): string {
  let h = host.trim().toLowerCase();
  if (h.startsWith('[')) h = h.slice(1, h.indexOf(']') >= 0 ? h.indexOf(']') : undefined);
  else if (h.indexOf(':') === h.lastIndexOf(':')) h = h.replace(/:\d*$/, '');
  return h.replace(/\.$/, '');
}

/** `/a/b/` → `/a/b`; `/` stays. */
const withoutTrailingSlash = (path: string) => (path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path);

/**
 * A rule's tests. `loose`: its path globs as a backend that ignores case and a trailing `/` reads
 * them (Express, Koa, ASP.NET, IIS, Spring ≤ 5 by default); the request's path is made the same
 * way (`Prepared.loosePath`). Used only to find targets whose rule would change under that reading.
 */
function compileMatch(match: RuleDocument['match'], loose = false): Test[] {
  const tests: Test[] = [];
  const protocols = new Set<Protocol>(match.protocol ?? ['http']);
  tests.push((r) => protocols.has(r.protocol));
  if (match.method && !match.method.includes('*')) {
    const methods = new Set(match.method);
    if (methods.has('GET')) methods.add('HEAD'); // HEAD is GET without the body (RFC 9110 §9.3.2)
    tests.push((r) => r.method !== undefined && methods.has(r.method));
  }
  if (match.host) {
    const isHost = picomatch(match.host.map((h) => h.toLowerCase()), { ...GLOB_OPTIONS, nocase: true });
    tests.push((r) => r.host !== undefined && isHost(r.host));
  }
  if (match.path) {
    // `/**/x` also matches `/x`, as a globstar does in a shell (picomatch needs the variant spelled out).
    const globs = match.path.flatMap((g) => (g.startsWith('/**/') ? [g, g.slice(3)] : [g]));
    if (loose) {
      const isPath = picomatch(globs.map(withoutTrailingSlash), { ...GLOB_OPTIONS, nocase: true });
      tests.push((r) => r.loosePath !== undefined && isPath(r.loosePath));
    } else {
      const isPath = picomatch(globs, GLOB_OPTIONS);
      tests.push((r) => r.path !== undefined && isPath(r.path));
    }
  }
  for (const [name, want] of Object.entries(match.query ?? {})) {
    if (want === true) tests.push((r) => r.query?.has(name) === true);
    else if (want === false) tests.push((r) => r.query?.has(name) !== true);
    else {
      const values = new Set(want);
      tests.push((r) => {
        const got = r.query?.getAll(name) ?? [];
        return got.length > 0 && got.every((v) => values.has(v));
      });
    }
  }
  return tests;
}

/**
 * A validated policy, compiled once: first matching rule wins; no match is the default (deny
 * unless the file says otherwise). Pure and synchronous, so evaluating it is cheap and a reload
 * is one reference swap.
 */
export class Policy implements PolicyDecider {
  readonly #rules: CompiledRule[];
  readonly #default: PolicyVerdict;
  /** What a mail login no rule matches gets: `mailDefault`, never the HTTP `default`. */
  readonly #mailDefault: PolicyVerdict;
  /** Query parameters some rule looks at: a request naming one of them twice with different values is ambiguous. */
  readonly #queryKeys: ReadonlySet<string>;
  /** Whether a path glob has a capital letter or ends in `/`: then every path is read loosely too. */
  readonly #globsReadLoosely: boolean;
  /** Every audience the policy names. */
  readonly audiences: ReadonlySet<string>;
  /** Whether any rule or default hands out identity tokens (then `identityIssuer` is needed). */
  readonly usesIdentityTokens: boolean;

  constructor(readonly document: PolicyDocument) {
    const strategy = document.scopeStrategy;
    this.#rules = document.rules.map((r) => ({
      name: r.name,
      tests: compileMatch(r.match),
      looseTests: compileMatch(r.match, true),
      verdict: r.deny
        ? { effect: 'deny', rule: r.name, why: `rule ${r.name} denies this request` }
        : {
            effect: 'require',
            rule: r.name,
            audience: r.audience ?? document.audience,
            scopes: r.scopes,
            scopeStrategy: r.scopeStrategy ?? strategy,
            // Mail backends take no header: tokens are for HTTP rules only.
            ...tokenFor(r.identityToken, (r.match.protocol ?? ['http']).includes('http') ? document.identityToken : undefined),
          },
    }));
    const d = document.default;
    const m = document.mailDefault;
    const verdictOf = (value: PolicyDocument['default'], name: string, why: string, tokens: boolean): PolicyVerdict =>
      value === 'deny'
        ? { effect: 'deny', rule: undefined, why }
        : value === 'allow'
          ? { effect: 'require', rule: name, audience: document.audience, scopes: [], scopeStrategy: strategy, ...tokenFor(undefined, tokens ? document.identityToken : undefined) }
          : {
              effect: 'require',
              rule: name,
              audience: value.audience ?? document.audience,
              scopes: value.scopes,
              scopeStrategy: value.scopeStrategy ?? strategy,
              ...tokenFor(tokens ? value.identityToken : false, tokens ? document.identityToken : undefined),
            };
    this.#default = verdictOf(d, 'default', 'no rule matches and the policy has no default', true);
    this.#mailDefault = verdictOf(m, 'mailDefault', 'no rule names this mail protocol and the policy has no mailDefault (default applies to HTTP only)', false);
    const audiences = [document.audience, ...document.rules.map((r) => r.audience), typeof d === 'object' ? d.audience : undefined, typeof m === 'object' ? m.audience : undefined];
    this.audiences = new Set(audiences.filter((a): a is string => a !== undefined));
    this.#queryKeys = new Set(document.rules.flatMap((r) => Object.keys(r.match.query ?? {})));
    const globs = document.rules.flatMap((r) => r.match.path ?? []);
    this.#globsReadLoosely = globs.some((g) => g !== g.toLowerCase() || withoutTrailingSlash(g) !== g);
    this.usesIdentityTokens = [...this.#rules.map((r) => r.verdict), this.#default].some((v) => v.effect === 'require' && v.identityToken !== undefined);
  }


  get ruleCount(): number {
    return this.#rules.length;
  }

  evaluate(request: PolicyRequest): PolicyVerdict {
    const path = request.target?.path;
    const query = request.target?.query;
    if (query !== undefined && this.#queryKeys.size > 0) {
      const ambiguity = request.target?.queryAmbiguity;
      if (ambiguity !== undefined) return { effect: 'deny', rule: undefined, why: ambiguity };
      for (const key of this.#queryKeys) {
        if (new Set(query.getAll(key)).size > 1) return { effect: 'deny', rule: undefined, why: `query parameter ${key} is given twice with different values` };
      }
    }
    const prepared: Prepared = {
      protocol: request.protocol,
      method: request.method?.toUpperCase(),
      host: request.host === undefined ? undefined : hostname(request.host),
      path,
      loosePath: path === undefined ? undefined : withoutTrailingSlash(path),
      query,
    };
    const index = this.#rules.findIndex((rule) => rule.tests.every((t) => t(prepared)));
    // What credgate approves is what the backend serves: a path whose rule changes when read as a
    // backend that ignores case or a trailing `/` reads it (`/app/ADMIN/x` past a deny rule for
    // `/app/admin/**`, `POST /api/transfer/` past the rule for `/api/transfer`) is ambiguous.
    if (path !== undefined && (this.#globsReadLoosely || path !== path.toLowerCase() || path !== prepared.loosePath)) {
      const loose = this.#rules.findIndex((rule) => rule.looseTests.every((t) => t(prepared)));
      if (loose !== index) return { effect: 'deny', rule: undefined, why: 'the path matches another rule when read without regard to case or a trailing / (as many backends read it)' };
    }
    if (index >= 0) return this.#rules[index]!.verdict;
    return request.protocol === 'http' ? this.#default : this.#mailDefault;
  }

  /** Warnings for `credgate policy check`: settings that are valid but easy to misread. */
  warnings(): string[] {
    const out: string[] = [];
    const mailRules = this.document.rules.some((r) => (r.match.protocol ?? ['http']).some((p) => p !== 'http'));
    if (this.document.mailDefault !== 'deny') out.push('mailDefault is not deny: every IMAP, POP3 and SMTP login that no rule names gets it');
    else if (this.document.default !== 'deny' && !mailRules) out.push('default applies to HTTP only: no rule names imap, pop3 or smtp, so every mail login is refused (set rules with protocol:, or mailDefault)');
    return out;
  }
}
