import { randomHex, randomSecret, sha256 } from './secrets.js';

export type OpaqueTokenKind = 'app_password' | 'refresh_token';

export interface OpaqueTokenRecord {
  readonly id: string;
  readonly kind: OpaqueTokenKind;
  /** The `token_type` introspection answers. */
  readonly tokenType: string;
  readonly sub: string;
  readonly scope: string;
  readonly audience: string;
  readonly clientId: string | undefined;
  /** Milliseconds since the epoch. */
  readonly createdAt: number;
  /** Milliseconds since the epoch; undefined: never expires. */
  readonly expiresAt: number | undefined;
  revoked: boolean;
}

export type NewOpaqueToken = Omit<OpaqueTokenRecord, 'id' | 'createdAt' | 'revoked'>;

/**
 * App-specific passwords and refresh tokens. Only the sha256 of each secret is kept, so a memory
 * dump or a log line of a record never holds a usable credential.
 */
export class OpaqueTokenStore {
  readonly #byDigest = new Map<string, OpaqueTokenRecord>();
  readonly #byId = new Map<string, OpaqueTokenRecord>();

  create(fields: NewOpaqueToken, now = Date.now()): { id: string; secret: string } {
    const secret = randomSecret(32);
    const id = `${fields.kind === 'app_password' ? 'asp' : 'rt'}_${randomHex(8)}`;
    const record: OpaqueTokenRecord = { ...fields, id, createdAt: now, revoked: false };
    this.#byDigest.set(sha256(secret).toString('hex'), record);
    this.#byId.set(id, record);
    return { id, secret };
  }

  /** The record if the secret belongs to a token that is neither revoked nor expired. */
  findActive(secret: string, now = Date.now()): OpaqueTokenRecord | undefined {
    const record = this.#byDigest.get(sha256(secret).toString('hex'));
    if (record === undefined || record.revoked) return undefined;
    if (record.expiresAt !== undefined && now >= record.expiresAt) return undefined;
    return record;
  }

  /** False when no token has this id or it was already revoked. */
  revoke(id: string): boolean {
    const record = this.#byId.get(id);
    if (record === undefined || record.revoked) return false;
    record.revoked = true;
    return true;
  }

  /** The user's app passwords that are not revoked (expired ones included, so they can be seen). */
  appPasswordsOf(sub: string): OpaqueTokenRecord[] {
    return [...this.#byId.values()].filter((r) => r.kind === 'app_password' && r.sub === sub && !r.revoked);
  }
}
