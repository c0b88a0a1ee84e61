import { matchesDigest, randomHex, sha256 } from './secrets.js';
import type { DevUser } from './types.js';

export interface StoredUser {
  readonly username: string;
  readonly email: string | undefined;
  readonly sub: string;
  readonly permissions: readonly string[];
  readonly mfa: boolean;
  /** sha256 of the password: the clear text is not kept. */
  readonly passwordDigest: Buffer;
}

/** What introspection answers as `username`: the username, or the email when there is none. */
export function displayName(user: StoredUser): string {
  return user.username !== '' ? user.username : (user.email ?? '');
}

// Compared against when the user does not exist, so both cases cost the same.
const DUMMY_DIGEST = sha256('no such user');

/** Users looked up case-insensitively by username or email, as Auth0's database connection does. */
export class UserDirectory {
  readonly #byLogin = new Map<string, StoredUser>();
  readonly #bySub = new Map<string, StoredUser>();

  add(u: DevUser): DevUser & { sub: string } {
    const sub = u.sub ?? `auth0|${randomHex(12)}`;
    const logins = [u.username, u.email].filter((l): l is string => l !== undefined && l !== '');
    if (logins.length === 0) throw new Error('devserver: a user needs a username or an email');
    for (const login of logins) {
      if (this.#byLogin.has(login.toLowerCase())) throw new Error(`devserver: user ${login} already exists`);
    }
    if (this.#bySub.has(sub)) throw new Error(`devserver: sub ${sub} already exists`);
    const stored: StoredUser = Object.freeze({
      username: u.username,
      email: u.email,
      sub,
      permissions: Object.freeze([...u.permissions]),
      mfa: u.mfa ?? false,
      passwordDigest: sha256(u.password),
    });
    for (const login of logins) this.#byLogin.set(login.toLowerCase(), stored);
    this.#bySub.set(sub, stored);
    return { ...u, permissions: [...u.permissions], sub };
  }

  find(login: string): StoredUser | undefined {
    return this.#byLogin.get(login.toLowerCase());
  }

  bySub(sub: string): StoredUser | undefined {
    return this.#bySub.get(sub);
  }

  /** The user if the password is right; the digest comparison runs even for unknown users. */
  authenticate(login: string, password: string): StoredUser | undefined {
    const user = this.find(login);
    const ok = matchesDigest(password, user?.passwordDigest ?? DUMMY_DIGEST);
    return ok ? user : undefined;
  }
}
