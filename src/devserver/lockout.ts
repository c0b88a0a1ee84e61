interface Entry {
  readonly username: string;
  readonly ip: string;
  failures: number;
  blocked: boolean;
}

/**
 * Auth0's brute-force protection: after `threshold` consecutive failed logins for one
 * (username, IP) pair, that pair is blocked, even with the right password, until unblocked.
 * A successful login resets the count. Unknown usernames count as well, so the answer does not
 * reveal whether a user exists.
 */
export class LoginLockout {
  readonly #entries = new Map<string, Entry>();

  constructor(readonly threshold: number) {}

  static key(username: string, ip: string): string {
    return `${username.toLowerCase()}|${ip}`;
  }

  isBlocked(username: string, ip: string): boolean {
    return this.#entries.get(LoginLockout.key(username, ip))?.blocked ?? false;
  }

  recordFailure(username: string, ip: string): void {
    const key = LoginLockout.key(username, ip);
    const entry = this.#entries.get(key) ?? { username: username.toLowerCase(), ip, failures: 0, blocked: false };
    entry.failures += 1;
    if (entry.failures >= this.threshold) entry.blocked = true;
    this.#entries.set(key, entry);
  }

  recordSuccess(username: string, ip: string): void {
    this.#entries.delete(LoginLockout.key(username, ip));
  }

  /** Clears counts and blocks for every IP of each of these logins (compared lower-cased). */
  unblock(logins: readonly string[]): void {
    const wanted = new Set(logins.map((l) => l.toLowerCase()));
    for (const [key, entry] of this.#entries) {
      if (wanted.has(entry.username)) this.#entries.delete(key);
    }
  }

  snapshot(): { failedLogins: Record<string, number>; blocked: string[] } {
    const failedLogins: Record<string, number> = {};
    const blocked: string[] = [];
    for (const [key, entry] of this.#entries) {
      failedLogins[key] = entry.failures;
      if (entry.blocked) blocked.push(key);
    }
    return { failedLogins, blocked };
  }
}
