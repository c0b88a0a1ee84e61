import assert from 'node:assert/strict';
import { createHmac, createPublicKey, generateKeyPairSync, sign, constants, type KeyObject } from 'node:crypto';
import { test } from 'node:test';
import fc from 'fast-check';
import { createLocalJWKSet, errors, exportJWK, jwtVerify, SignJWT, type JWK, type JWTPayload } from 'jose';
import { UnusableKeyError, verifyJwt } from '../../src/upstream/jws.js';
import { ASYMMETRIC_JWS_ALGORITHMS } from '../../src/config/schema.js';

/**
 * credgate checks JWT signatures and claims with node:crypto on the event loop (src/upstream/jws.ts)
 * instead of jose's WebCrypto jobs. The property: on every token an attacker or a sloppy AS can
 * make, it says yes exactly when jose's `jwtVerify` with the options credgate used before says yes,
 * with the same claims; and where it differs on purpose (a `crit` or `b64` header, padded base64url), it
 * says no.
 */

const RUNS = Number(process.env.CREDGATE_PROPERTY_RUNS ?? 1000);
const ISSUER = 'https://as.example.com/';
const AUDIENCE = 'https://git.example.com';
const TOLERANCE = 30;

type Kind = 'rsa' | 'ec256' | 'ec384' | 'ec521' | 'ed25519';
interface Pair { kind: Kind; privateKey: KeyObject; publicKey: KeyObject; kid: string }

function pair(kind: Kind, kid: string): Pair {
  const { privateKey, publicKey } =
    kind === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 })
    : kind === 'ed25519' ? generateKeyPairSync('ed25519')
    : generateKeyPairSync('ec', { namedCurve: { ec256: 'prime256v1', ec384: 'secp384r1', ec521: 'secp521r1' }[kind] });
  return { kind, privateKey, publicKey, kid };
}

const keys = [pair('rsa', 'rsa-1'), pair('rsa', 'rsa-2'), pair('ec256', 'p256'), pair('ec384', 'p384'), pair('ec521', 'p521'), pair('ed25519', 'ed')];
/** Not in the AS's key set; sometimes sent under one of its kids. */
const outsider = pair('rsa', 'rsa-1');
const outsiderEc = pair('ec256', 'p256');

// The AS's JWKS: rsa-1 declares RS256, rsa-2 no alg (so it matches RS* and PS*), the others no alg either.
const jwks = { keys: await Promise.all(keys.map(async (k, i) => ({ ...(await exportJWK(k.publicKey)), kid: k.kid, use: 'sig', ...(i === 0 ? { alg: 'RS256' } : {}) }) as JWK)) };
const resolver = createLocalJWKSet(jwks);

const NATURAL: Record<Kind, string> = { rsa: 'RS256', ec256: 'ES256', ec384: 'ES384', ec521: 'ES512', ed25519: 'EdDSA' };
const FAMILY: Record<string, Kind[]> = {
  RS256: ['rsa'], RS384: ['rsa'], RS512: ['rsa'], PS256: ['rsa'], PS384: ['rsa'], PS512: ['rsa'],
  ES256: ['ec256'], ES384: ['ec384'], ES512: ['ec521'], EdDSA: ['ed25519'],
};

const b64 = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

/** A signature over `input` as `alg` would make it with `key` (or the key's own alg when they do not fit). */
function signature(alg: string, key: Pair, input: string): string {
  if (alg === 'none') return '';
  if (alg === 'HS256') return createHmac('sha256', key.publicKey.export({ format: 'pem', type: 'spki' })).update(input).digest('base64url');
  const used = FAMILY[alg]?.includes(key.kind) ? alg : NATURAL[key.kind];
  const bits = used === 'EdDSA' ? 0 : Number(used.slice(2));
  const hash = used === 'EdDSA' ? null : `sha${bits === 512 && used.startsWith('ES') ? 512 : bits}`;
  const options = used.startsWith('PS')
    ? { key: key.privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: bits / 8 }
    : used.startsWith('ES') ? { key: key.privateKey, dsaEncoding: 'ieee-p1363' as const } : { key: key.privateKey };
  return sign(hash, Buffer.from(input), options).toString('base64url');
}

const now = () => Math.floor(Date.now() / 1000);

/**
 * One of `good` eleven times in twelve, else one of `bad`: with a dozen fields, about a third of the
 * tokens are valid and most of the others have exactly one fault, so each fault is met alone.
 */
const mostly = <T>(good: T | readonly T[], ...bad: T[]) => fc.oneof({ arbitrary: fc.constantFrom(...(Array.isArray(good) ? good : [good as T])), weight: 11 }, { arbitrary: fc.constantFrom(...bad), weight: 1 });

const claimsArb = fc.record({
  iss: mostly<unknown>(ISSUER, 'https://evil.example.com/', undefined, 7, `${ISSUER} `),
  aud: mostly<unknown>([AUDIENCE, [AUDIENCE], ['other', AUDIENCE]], ['other'], 'other', undefined, [], [7], `${AUDIENCE}/`),
  // With the 30 s tolerance: 20 s ago still counts, 40 s ago does not; nbf 20 s ahead counts, 40 s does not.
  exp: mostly<unknown>([600, -20, 1e400], -40, -600, undefined, 'soon', null),
  nbf: mostly<unknown>([undefined, -60, 20], 600, 40, 'x', null),
  iat: mostly<unknown>([undefined, 0, -3600], 'x', null),
  sub: mostly<unknown>('auth0|alice', '', undefined, 5, null),
  extra: fc.constantFrom<Record<string, unknown>>({}, { scope: 'read write' }, { constructor: 1 }, JSON.parse('{"__proto__": {"sub": "x"}}') as Record<string, unknown>),
}).map(({ extra, exp, nbf, iat, ...rest }) => {
  const t = now();
  const rel = (v: unknown) => (typeof v === 'number' && Math.abs(v) <= 3600 ? t + v : v);
  const claims: Record<string, unknown> = { ...JSON.parse(JSON.stringify(extra)), ...rest, exp: rel(exp), nbf: rel(nbf), iat: rel(iat) };
  for (const k of Object.keys(claims)) if (claims[k] === undefined) delete claims[k];
  return claims;
});

const headerArb = fc.record({
  /** 'natural': the signing key's own algorithm. */
  alg: mostly<unknown>('natural', ...ASYMMETRIC_JWS_ALGORITHMS, 'HS256', 'none', 'NONE', 'ES256K', undefined, 5),
  kid: mostly<unknown>('own', 'other', undefined, 'nope', 3, '../../etc/passwd'),
  extra: mostly<Record<string, unknown>>([{}, { typ: 'JWT' }, { typ: 'at+jwt' }, { jku: 'http://127.0.0.1:1/jwks' }], { crit: ['exp'], exp: 1 }, { crit: ['b64'], b64: true }, { crit: ['b64'], b64: false }, { b64: false }, { crit: [] }),
});

const tamperArb = mostly('none', 'payload', 'signature', 'truncate', 'borrowed', 'alg-swap', 'empty-signature', 'array-payload', 'extra-segment', 'padding', 'bad-utf8');

const tokenArb = fc.record({
  signer: fc.oneof({ arbitrary: fc.integer({ min: 0, max: keys.length - 1 }), weight: 11 }, { arbitrary: fc.integer({ min: keys.length, max: keys.length + 1 }), weight: 1 }),
  header: headerArb,
  claims: claimsArb,
  tamper: tamperArb,
  allowed: fc.oneof({ arbitrary: fc.constant([...ASYMMETRIC_JWS_ALGORITHMS]), weight: 5 }, { arbitrary: fc.subarray([...ASYMMETRIC_JWS_ALGORITHMS], { minLength: 1 }), weight: 1 }),
});

type TokenInput = typeof tokenArb extends fc.Arbitrary<infer T> ? T : never;

function build({ signer, header, claims, tamper }: TokenInput): string {
  const key = signer < keys.length ? keys[signer]! : signer === keys.length ? outsider : outsiderEc;
  const kid = header.kid === 'own' ? key.kid : header.kid === 'other' ? keys[(keys.indexOf(key) + 1) % keys.length]!.kid : header.kid;
  const h: Record<string, unknown> = { ...header.extra, alg: header.alg === 'natural' ? NATURAL[key.kind] : header.alg, kid };
  for (const k of Object.keys(h)) if (h[k] === undefined) delete h[k];
  const alg = typeof h['alg'] === 'string' ? h['alg'] : NATURAL[key.kind];
  let encodedHeader = b64(h);
  let encodedPayload = tamper === 'array-payload' ? b64([claims]) : tamper === 'bad-utf8' ? Buffer.from([0x7b, 0xff, 0x7d]).toString('base64url') : b64(claims);
  let sig = signature(alg, key, `${encodedHeader}.${encodedPayload}`);
  switch (tamper) {
    case 'payload': encodedPayload = b64({ ...claims, sub: 'auth0|mallory' }); break;
    case 'signature': sig = sig.length > 0 ? `${sig[0] === 'A' ? 'B' : 'A'}${sig.slice(1)}` : 'AAAA'; break;
    case 'truncate': sig = sig.slice(0, Math.floor(sig.length / 2)); break;
    case 'borrowed': sig = signature(alg, key, `${encodedHeader}.${b64({ other: true })}`); break;
    case 'alg-swap': encodedHeader = b64({ ...h, alg: alg === 'RS256' ? 'PS256' : alg === 'ES256' ? 'ES384' : 'RS256' }); break;
    case 'empty-signature': sig = ''; break;
    case 'padding': sig = `${sig}==`; break;
  }
  return tamper === 'extra-segment' ? `${encodedHeader}.${encodedPayload}.${sig}.x` : `${encodedHeader}.${encodedPayload}.${sig}`;
}

type Verdict = { ok: true; payload: JWTPayload } | { ok: false; error?: string };

async function jose(token: string, allowed: readonly string[]): Promise<Verdict> {
  try {
    const { payload } = await jwtVerify(token, resolver, { issuer: ISSUER, audience: AUDIENCE, algorithms: [...allowed], clockTolerance: TOLERANCE, requiredClaims: ['exp', 'sub'] });
    return { ok: true, payload };
  } catch (err) {
    return err instanceof errors.JOSEError ? { ok: false } : { ok: false, error: String(err) };
  }
}

async function ours(token: string, allowed: readonly string[]): Promise<Verdict> {
  try {
    const payload = await verifyJwt(token, resolver, { issuer: ISSUER, audience: AUDIENCE, algorithms: new Set(allowed), clockToleranceSeconds: TOLERANCE });
    return payload === null ? { ok: false } : { ok: true, payload };
  } catch (err) {
    return err instanceof errors.JOSEError ? { ok: false } : { ok: false, error: String(err) };
  }
}

/** Where credgate is stricter than jose on purpose: a `crit` or `b64` header, or a segment that is
 * not plain unpadded base64url (jose's decoder takes `=` padding; RFC 7515 §2 has none). */
const deliberate = (token: string) => {
  if (!token.split('.').every((part) => /^[A-Za-z0-9_-]*$/.test(part))) return true;
  try {
    const header = JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()) as Record<string, unknown>;
    return 'crit' in header || 'b64' in header;
  } catch {
    return false;
  }
};

test('property: on any token, the signature and claims check says yes exactly when jose does, with the same claims', async (t) => {
  let accepted = 0;
  let refused = 0;
  await fc.assert(
    fc.asyncProperty(tokenArb, async (input) => {
      const token = build(input);
      const [theirs, mine] = [await jose(token, input.allowed), await ours(token, input.allowed)];
      if (mine.ok) {
        assert.ok(theirs.ok, `accepted what jose refuses: ${token}`);
        assert.deepEqual(mine.payload, theirs.payload);
        accepted++;
      } else {
        refused++;
        if (theirs.ok) assert.ok(deliberate(token), `refused what jose accepts: ${token}`);
        assert.equal(mine.error, undefined, `an error, not a refusal: ${mine.error}`);
      }
    }),
    { numRuns: RUNS },
  );
  t.diagnostic(`${accepted} accepted, ${refused} refused`);
  // The generator reaches both verdicts (else the property says little).
  assert.ok(accepted >= RUNS / 10 && refused >= RUNS / 4, `${accepted} accepted, ${refused} refused`);
});

test('genuine tokens of every algorithm, signed by jose, are accepted with their claims', async () => {
  const t = now();
  for (const alg of ASYMMETRIC_JWS_ALGORITHMS) {
    const key = keys.find((k) => FAMILY[alg]!.includes(k.kind) && !(alg !== 'RS256' && k.kid === 'rsa-1'))!;
    const token = await new SignJWT({ scope: 'read' }).setProtectedHeader({ alg, kid: key.kid, typ: 'JWT' }).setIssuer(ISSUER).setAudience([AUDIENCE, 'x']).setSubject('auth0|bob').setIssuedAt(t).setNotBefore(t).setExpirationTime(t + 60).sign(key.privateKey);
    const verdict = await ours(token, ASYMMETRIC_JWS_ALGORITHMS);
    assert.ok(verdict.ok, alg);
    assert.equal(verdict.payload.sub, 'auth0|bob');
    assert.equal((await ours(token, ASYMMETRIC_JWS_ALGORITHMS.filter((a) => a !== alg))).ok, false, `${alg} not allowed`);
  }
});

test('an RSA key under 2048 bits in the JWKS is the key set\'s fault (an error), not a refusal', async () => {
  const weak = generateKeyPairSync('rsa', { modulusLength: 1024 });
  const set = createLocalJWKSet({ keys: [{ ...(await exportJWK(createPublicKey(weak.privateKey))), kid: 'weak' }] });
  const input = `${b64({ alg: 'RS256', kid: 'weak' })}.${b64({ iss: ISSUER, aud: AUDIENCE, sub: 's', exp: now() + 600 })}`;
  const token = `${input}.${sign('sha256', Buffer.from(input), weak.privateKey).toString('base64url')}`; // jose will not sign with it
  await assert.rejects(verifyJwt(token, set, { issuer: ISSUER, audience: AUDIENCE, algorithms: new Set(['RS256']), clockToleranceSeconds: 0 }), UnusableKeyError);
});

test('stricter than jose on purpose: crit and b64 headers, padded segments, and a key of the wrong kind from the resolver', async () => {
  const checks = { issuer: ISSUER, audience: AUDIENCE, algorithms: new Set<string>(ASYMMETRIC_JWS_ALGORITHMS), clockToleranceSeconds: TOLERANCE };
  const rsa = keys[1]!;
  const claims = b64({ iss: ISSUER, aud: AUDIENCE, sub: 'auth0|alice', exp: now() + 600 });
  const signed = (header: Record<string, unknown>) => {
    const input = `${b64(header)}.${claims}`;
    return `${input}.${signature(String(header['alg']), rsa, input)}`;
  };
  const good = signed({ alg: 'RS256', kid: rsa.kid });
  assert.ok(await verifyJwt(good, resolver, checks), 'the control token');
  assert.equal(await verifyJwt(signed({ alg: 'RS256', kid: rsa.kid, b64: true }), resolver, checks), null, 'b64');
  assert.equal(await verifyJwt(signed({ alg: 'RS256', kid: rsa.kid, crit: ['b64'], b64: true }), resolver, checks), null, 'crit');
  assert.ok((await jose(signed({ alg: 'RS256', kid: rsa.kid, crit: ['b64'], b64: true }), ['RS256'])).ok, 'jose takes that one');
  assert.equal(await verifyJwt(`${good}==`, resolver, checks), null, 'padding');
  // A resolver that hands over a key that cannot check the token's alg (jose's never does).
  const p256 = keys[2]!.publicKey;
  assert.equal(await verifyJwt(good, async () => p256, checks), null, 'EC key for RS256');
  // "RS256" over an ECDSA (DER) signature verifies with the EC key unless the key's type is checked.
  const rsInput = `${b64({ alg: 'RS256' })}.${claims}`;
  const ecdsaAsRs256 = `${rsInput}.${sign('sha256', Buffer.from(rsInput), keys[2]!.privateKey).toString('base64url')}`;
  assert.equal(await verifyJwt(ecdsaAsRs256, async () => p256, checks), null, 'an ECDSA signature called RS256');
  const input = `${b64({ alg: 'ES256' })}.${claims}`;
  const es256 = `${input}.${signature('ES256', keys[2]!, input)}`;
  assert.ok(await verifyJwt(es256, async () => p256, checks), 'the right curve');
  // "ES256" made with a P-384 key (SHA-256 on the wrong curve) verifies with that key unless the curve is checked.
  const p384 = keys[3]!;
  const wrongCurve = `${input}.${sign('sha256', Buffer.from(input), { key: p384.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
  assert.equal(await verifyJwt(wrongCurve, async () => p384.publicKey, checks), null, 'P-384 key for ES256');
  assert.equal(await verifyJwt(good, async () => rsa.privateKey, checks), null, 'a private key');
});
