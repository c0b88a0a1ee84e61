/**
 * What replicas share besides throttling (`src/state/` implements it over Redis): known-wrong
 * credentials and "this credential is an ASP" markers, named by the same HMAC keys as the local
 * cache. Verified identities are never shared: they stay in each process (the fast path), and
 * purges reach every replica by broadcast instead.
 *
 * Every method settles — never rejects — within the shared store's timeout. When the store cannot
 * be asked, the answer is "nothing known" and the replica decides with its local state alone.
 */
export interface SharedMemory {
  /** Whether another replica saw these credentials fail recently (and no purge of the user came since), prove to be an ASP, or succeed as a password. */
  recall(key: string, username: string | undefined): Promise<{ readonly denied: boolean; readonly appPassword: boolean; readonly knownPassword: boolean }>;
  /** These credentials were wrong: other replicas answer them from memory for `negativeCacheTtlSeconds`. */
  rememberDenied(key: string): Promise<void>;
  /** These credentials proved to be an ASP: other replicas introspect them first for `appPasswordMemorySeconds`. */
  rememberAppPassword(key: string): Promise<void>;
  /** This password succeeded at the password grant: every replica may send it in the slot login protection keeps for known-good passwords. */
  rememberPassword(key: string): Promise<void>;
  /** The AS rejected this password: it is no longer known to be good anywhere. */
  forgetPassword(key: string): Promise<void>;
}
