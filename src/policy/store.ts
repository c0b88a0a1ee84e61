import { createHash } from 'node:crypto';
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../errors.js';
import type { Logger } from '../log.js';
import { Policy, type PolicyDecider, type PolicyRequest, type PolicyVerdict } from './policy.js';
import { policySchema } from './schema.js';

/** Largest policy file read; a policy is a few kilobytes. */
const MAX_POLICY_BYTES = 1024 * 1024;

/**
 * For "a value or a list of them" a union error says only "Invalid input": report the branch that
 * got furthest instead (the one whose complaint is not merely the wrong type), with its full path.
 */
function specific(issue: z.core.$ZodIssue): z.core.$ZodIssue {
  if (issue.code !== 'invalid_union' || issue.errors.length === 0) return issue;
  const furthest = (i: z.core.$ZodIssue) => i.path.length > 0 || (i.code !== 'invalid_type' && i.code !== 'invalid_value');
  const branch = issue.errors.find((b) => b.length > 0 && furthest(b[0]!));
  const inner = branch?.[0];
  return inner ? specific({ ...inner, path: [...issue.path, ...inner.path] } as z.core.$ZodIssue) : issue;
}

/**
 * Reads and validates a policy file. Throws ConfigError (key `policyFile`) whose message names the
 * file and, for a schema problem, the path inside it (`rules[2].match.path: must start with /`).
 */
export function loadPolicyFile(file: string): { policy: Policy; digest: string } {
  let text: string;
  try {
    const bytes = readFileSync(file);
    if (bytes.length > MAX_POLICY_BYTES) throw new ConfigError(`policy file ${file} is larger than ${MAX_POLICY_BYTES} bytes`, 'policyFile');
    text = bytes.toString('utf8');
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(`cannot read policy file ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, 'policyFile');
  }
  let doc: unknown;
  try {
    doc = parseYaml(text, { maxAliasCount: 10, uniqueKeys: true });
  } catch (err) {
    throw new ConfigError(`policy file ${file} is not valid YAML: ${(err as Error).message.split('\n')[0]}`, 'policyFile');
  }
  const result = policySchema.safeParse(doc ?? {});
  if (!result.success) {
    const issue = specific(result.error.issues[0]!);
    const where = issue.path.reduce<string>((s, p) => (typeof p === 'number' ? `${s}[${p}]` : s ? `${s}.${String(p)}` : String(p)), '');
    const what = issue.code === 'unrecognized_keys' ? `unknown key(s) ${issue.keys.join(', ')}` : issue.message;
    throw new ConfigError(`policy file ${file} is invalid: ${where ? `${where}: ` : ''}${what}`, 'policyFile');
  }
  return { policy: new Policy(result.data), digest: createHash('sha256').update(text).digest('hex') };
}

export interface PolicyStoreEvents {
  /** Called after every reload attempt that read a changed file. */
  onReload?(result: 'success' | 'failure'): void;
}

/**
 * The current policy, swapped atomically on reload: a request reads `current` once, so it is
 * decided wholly by the old or wholly by the new policy, and none is dropped. A file that fails
 * to read, parse or validate is refused with an error log line; the old policy stays.
 *
 * Reloads on SIGHUP (`main`) and when the file changes. The directory is watched rather than the
 * file, so that editors that write a new file and rename it over the old one, and Kubernetes
 * ConfigMap volumes (which swap a `..data` symlink), are both seen.
 */
export class PolicyStore implements PolicyDecider {
  #policy: Policy;
  #digest: string;
  #watcher: FSWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** The last reload attempt was refused: the file on disk is not the policy in force. */
  #lastAttemptFailed = false;

  constructor(
    readonly file: string,
    private readonly log: Logger,
    private readonly events: PolicyStoreEvents = {},
  ) {
    const { policy, digest } = loadPolicyFile(file);
    this.#policy = policy;
    this.#digest = digest;
    log.info({ policyFile: file, rules: policy.ruleCount }, 'policy loaded');
  }

  get current(): Policy {
    return this.#policy;
  }

  evaluate(request: PolicyRequest): PolicyVerdict {
    return this.#policy.evaluate(request);
  }

  /** Re-reads the file. Returns whether the policy in force is now the file's content. */
  reload(reason = 'requested'): boolean {
    let loaded: { policy: Policy; digest: string };
    try {
      loaded = loadPolicyFile(this.file);
    } catch (err) {
      this.#lastAttemptFailed = true;
      this.events.onReload?.('failure');
      this.log.error({ policyFile: this.file, trigger: reason, err: (err as Error).message }, 'policy reload refused; the previous policy stays in force');
      return false;
    }
    if (loaded.digest === this.#digest) {
      // The file is back to the policy in force (say, a refused edit reverted): that is a success.
      if (this.#lastAttemptFailed) {
        this.#lastAttemptFailed = false;
        this.events.onReload?.('success');
        this.log.info({ policyFile: this.file, trigger: reason, rules: loaded.policy.ruleCount }, 'policy file matches the policy in force again');
      } else if (reason !== 'file changed') {
        // An explicit reload (SIGHUP) is answered in the log even when nothing changed.
        this.log.info({ policyFile: this.file, trigger: reason, rules: loaded.policy.ruleCount }, 'policy unchanged');
      }
      return true;
    }
    this.#lastAttemptFailed = false;
    this.#policy = loaded.policy;
    this.#digest = loaded.digest;
    this.events.onReload?.('success');
    this.log.info({ policyFile: this.file, trigger: reason, rules: loaded.policy.ruleCount }, 'policy reloaded');
    return true;
  }

  /** Reloads shortly after the file (or its directory entry) changes; bursts of events make one reload. */
  watch(debounceMs = 150): void {
    if (this.#watcher) return;
    const name = basename(this.file);
    try {
      this.#watcher = watch(dirname(this.file), { persistent: false }, (_event, changed) => {
        if (changed !== null && changed !== name && !String(changed).startsWith('..')) return;
        clearTimeout(this.#timer);
        this.#timer = setTimeout(() => this.reload('file changed'), debounceMs);
        this.#timer.unref();
      });
      this.#watcher.on('error', (err) => this.log.warn({ policyFile: this.file, err: err.message }, 'policy file watch failed; reload with SIGHUP'));
    } catch (err) {
      this.log.warn({ policyFile: this.file, err: (err as Error).message }, 'cannot watch the policy file; reload with SIGHUP');
    }
  }

  close(): void {
    clearTimeout(this.#timer);
    this.#watcher?.close();
    this.#watcher = undefined;
  }
}
