import { z } from 'zod';
import { SCOPE_STRATEGIES, SCOPE_TOKEN } from '../vocabulary.js';

/** Protocols a request can arrive by: `http` (forward-auth, `/v1/verify`) or a mail protocol (`/auth/mail`). */
export const PROTOCOLS = ['http', 'imap', 'pop3', 'smtp'] as const;
export type Protocol = (typeof PROTOCOLS)[number];

const oneOrMany = <T extends z.ZodType>(item: T) =>
  z.union([item, z.array(item).min(1).max(100)], { error: 'must be a value or a list of values' }).transform((v) => (Array.isArray(v) ? v : [v]) as z.output<T>[]);

const method = z
  .string()
  .regex(/^(\*|[A-Za-z]{1,20})$/, 'must be an HTTP method such as GET, or *')
  .transform((m) => m.toUpperCase());

/** A signed identity for the service behind the rule (src/identity/tokens.ts). */
const identityToken = z
  .object({
    /** `aud` of the token: the downstream service that verifies it. */
    audience: z.string().min(1).max(512),
    /** Longest life, seconds (never past the credential's own expiry). Default 60. */
    ttlSeconds: z.number().int().min(5).max(3600).default(60),
    /** Header it travels in on `/auth`. Default `X-Auth-Token`. */
    header: z.string().regex(/^[A-Za-z0-9-]{1,64}$/, 'must be a header name (letters, digits, -)').default('X-Auth-Token'),
  })
  .strict();

const scopes = z.array(z.string().regex(SCOPE_TOKEN, 'must be an RFC 6749 scope-token (no spaces or quotes)')).max(64);

/** What a rule needs of the credential. Unset fields fall back to the policy's top level, then to the configuration. */
const requirement = {
  /** Audience the credential must have been issued for. Default: the policy's `audience`, else `CREDGATE_AUDIENCE`. */
  audience: z.string().min(1).max(512).optional(),
  /** Scopes the credential must grant (all of them). Default none: any valid credential. */
  scopes: scopes.default([]),
  /** How granted scopes satisfy required ones. Default: the policy's `scopeStrategy`. */
  scopeStrategy: z.enum(SCOPE_STRATEGIES).optional(),
  /** A signed identity token for the service behind it; `false`: none even if the policy sets a default. */
  identityToken: z.union([identityToken, z.literal(false)]).optional(),
};

const match = z
  .object({
    /** Host globs (`git.example.com`, `*.example.com`), case-insensitive, port ignored. */
    host: oneOrMany(z.string().min(1).max(253)).optional(),
    /** Methods; `GET` also matches `HEAD`; `*` any. */
    method: oneOrMany(method).optional(),
    /** Path globs (picomatch: `*` within a segment, `**` across segments), matched on the normalised path. */
    path: oneOrMany(z.string().startsWith('/', 'must start with /').max(1000)).optional(),
    /** Query parameters: a value (or any of a list) that the parameter must have; `true`: present; `false`: absent. */
    query: z.record(z.string().min(1).max(100), z.union([z.boolean(), oneOrMany(z.string().max(1000))])).optional(),
    /** Protocols the rule applies to. Default `http`: a rule says `protocol:` to apply to mail. */
    protocol: oneOrMany(z.enum(PROTOCOLS)).optional(),
  })
  .strict();

const rule = z
  .object({
    /** Shown in logs and by `credgate policy explain`. Unique. */
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/, 'must be 1–64 letters, digits, or _.:- (starting with a letter or digit)'),
    /** Conditions on the original request, all of which must hold. Empty or absent: every HTTP request. */
    match: match.default({}),
    /** `true`: a request this rule matches is denied whatever the credential. */
    deny: z.literal(true).optional(),
    ...requirement,
  })
  .strict()
  .refine((r) => !(r.deny && (r.scopes.length > 0 || r.audience !== undefined || r.scopeStrategy !== undefined || r.identityToken !== undefined)), {
    message: 'a deny rule takes no scopes, audience, scopeStrategy or identityToken',
  });

const defaultRule = z.union(
  [
    z.literal('deny'),
    /** `allow`: any valid credential for the policy's audience. */
    z.literal('allow'),
    z.object(requirement).strict(),
  ],
  { error: 'must be deny, allow, or a mapping of scopes, audience and scopeStrategy' },
);

/** The policy file (YAML). See README "Policy" and deploy/policies/. */
export const policySchema = z
  .object({
    /** Format version; only 1 exists. */
    version: z.literal(1).optional(),
    /** Default audience of every rule. Default: `CREDGATE_AUDIENCE`. */
    audience: z.string().min(1).max(512).optional(),
    /** Default scope strategy of every rule. */
    scopeStrategy: z.enum(SCOPE_STRATEGIES).default('exact'),
    /** Default signed identity token of every HTTP rule (a rule sets its own, or `false`). Needs `identityIssuer`. */
    identityToken: identityToken.optional(),
    /** Tried in order; the first rule whose `match` holds decides. */
    rules: z.array(rule).max(1000).default([]),
    /** What an HTTP request no rule matches gets. Default `deny`. It never applies to mail logins. */
    default: defaultRule.default('deny'),
    /** What an IMAP, POP3 or SMTP login no rule matches gets. Default `deny`: a mail login is decided by a
     * rule that names its protocol, so an HTTP-minded `default: allow` cannot open mail relaying. */
    mailDefault: defaultRule.default('deny'),
  })
  .strict()
  .superRefine((p, ctx) => {
    const seen = new Set<string>();
    p.rules.forEach((r, i) => {
      if (seen.has(r.name)) ctx.addIssue({ code: 'custom', path: ['rules', i, 'name'], message: `rule name ${r.name} is used twice` });
      seen.add(r.name);
    });
  });

export type PolicyDocument = z.output<typeof policySchema>;
export type RuleDocument = PolicyDocument['rules'][number];
