import { randomBytes } from 'node:crypto';
import type * as oauth from 'oauth4webapi';
import type { SigningKey } from './clientKeys.js';
import { backgroundSigner, quickSigner } from './jws.js';

/** An assertion's lifetime (RFC 7523 §3: short; oauth4webapi's and Auth0's examples use 60 s). */
export const ASSERTION_LIFETIME_SECONDS = 60;
/** A pre-signed assertion is sent only while at least this much of its lifetime is left. */
export const PRESIGNED_MIN_REMAINING_SECONDS = 30;
/** How many RSA-signed assertions are kept ready. */
export const PRESIGNED_POOL_SIZE = 4;

interface Assertion {
  readonly jwt: string;
  readonly expiresAt: number;
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

/**
 * RSA-signed assertions made ahead of need, so that an introspection does not wait for its
 * signature (~0.25 ms for RSA-2048 here, more on slower or busier machines). Each is used once (its own `jti`) and only while at least
 * `PRESIGNED_MIN_REMAINING_SECONDS` of its 60 s are left. Taking one starts a refill in the
 * background (one signature at a time, on libuv's thread pool) up to `PRESIGNED_POOL_SIZE`; with
 * none ready, the caller's is signed at once, as without the pool. A service that stops asking
 * stops signing: at most one pool's worth of assertions expires unused after its last call.
 */
export class PresignedAssertions {
  #ready: Assertion[] = [];
  /** Who the ready assertions are for (issuer and client id); another audience empties the pool. */
  #for = '';
  #refilling = false;

  constructor(
    private readonly make: (issuer: string, clientId: string) => Promise<Assertion>,
    private readonly size = PRESIGNED_POOL_SIZE,
  ) {}

  get ready(): number {
    return this.#ready.length;
  }

  async take(issuer: string, clientId: string): Promise<string> {
    const audience = `${issuer}\n${clientId}`;
    if (audience !== this.#for) {
      this.#for = audience;
      this.#ready = [];
    }
    const now = nowSeconds();
    let next: Assertion | undefined;
    while ((next = this.#ready.shift()) !== undefined && next.expiresAt - now < PRESIGNED_MIN_REMAINING_SECONDS);
    const own = next === undefined ? this.make(issuer, clientId) : undefined; // the caller's first, then the refill's
    this.#refill(issuer, clientId, audience);
    return (next ?? (await own!)).jwt;
  }

  #refill(issuer: string, clientId: string, audience: string): void {
    if (this.#refilling) return;
    this.#refilling = true;
    void (async () => {
      try {
        while (this.#for === audience && this.#ready.length < this.size) {
          const made = await this.make(issuer, clientId);
          if (this.#for === audience) this.#ready.push(made);
        }
      } catch {
        // The next take signs its own (and reports any error to its caller).
      } finally {
        this.#refilling = false;
      }
    })();
  }
}

/**
 * `private_key_jwt` client authentication (RFC 7523 §2.2) with the header and claims oauth4webapi's
 * PrivateKeyJwt sends: header `alg` (as the published JWK names it) and `kid`; iss = sub = client
 * id, aud = issuer, a 32-byte random jti, iat = nbf = now, exp = now + 60. EC and Ed25519 keys sign
 * on the calling thread with node:crypto (~30 µs); RSA keys sign on libuv's thread pool, ahead of
 * need (`PresignedAssertions`).
 */
export function privateKeyJwt(signing: SigningKey): oauth.ClientAuth {
  const header = Buffer.from(JSON.stringify({ alg: signing.alg, kid: signing.kid })).toString('base64url');
  const input = (issuer: string, clientId: string, now: number) => {
    const claims = { jti: randomBytes(32).toString('base64url'), aud: issuer, exp: now + ASSERTION_LIFETIME_SECONDS, iat: now, nbf: now, iss: clientId, sub: clientId };
    return `${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  };
  const send = (body: URLSearchParams, clientId: string, jwt: string) => {
    body.set('client_id', clientId);
    body.set('client_assertion_type', 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
    body.set('client_assertion', jwt);
  };

  const quick = quickSigner(signing.alg, signing.keyObject);
  if (quick !== undefined) {
    return (as, client, body) => {
      const signed = input(as.issuer, client.client_id, nowSeconds());
      send(body, client.client_id, `${signed}.${quick(signed)}`);
    };
  }
  const slow = backgroundSigner(signing.alg, signing.keyObject);
  const pool = new PresignedAssertions(async (issuer, clientId) => {
    const now = nowSeconds();
    const signed = input(issuer, clientId, now);
    return { jwt: `${signed}.${await slow(signed)}`, expiresAt: now + ASSERTION_LIFETIME_SECONDS };
  });
  return async (as, client, body) => send(body, client.client_id, await pool.take(as.issuer, client.client_id));
}
