/**
 * The dev authorization server (src/devserver) in a process of its own, for `npm run bench`: the
 * AS's work never lands on credgate's core or CPU time. The bench forks this file, pins it to the
 * load CPU and talks to it over the IPC channel (`AsProcess` below is the bench's side).
 *   child:  node dist/bench/as.js '{"audience":…,"clients":[…],"lockoutThreshold":…}'
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';
import { exportJWK, type JWK } from 'jose';
import { defaultDevUsers, startDevServer, type DevClient, type DevStats } from '../src/devserver/index.js';
import { pinProcess } from './pinning.js';

export interface AsOptions {
  audience: string;
  clients: DevClient[];
  lockoutThreshold: number;
}

type Operation = { op: 'stats' } | { op: 'appPasswords'; username: string; count: number } | { op: 'users'; count: number } | { op: 'keys' } | { op: 'jwks'; url: string } | { op: 'cpu' } | { op: 'close' };
type Request = Operation & { id: number };

type Reply = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: string };

export interface AsKeys {
  privateJwk: JWK;
  publicJwk: JWK;
}

/** The bench's handle on the AS child. */
export class AsProcess {
  #next = 0;
  readonly #waiting = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();

  private constructor(
    private readonly child: ChildProcess,
    readonly issuer: string,
    readonly url: string,
    /** A bare HTTP upstream in the AS's process (node:http, no AS): reads a request's body and
     * answers `{"active":false}` at once (or after `?waitMs=N` ms). Figure 7's floor for a request that calls an upstream. */
    readonly bareUpstreamUrl: string,
  ) {
    child.on('message', (m: Reply) => {
      const w = this.#waiting.get(m.id);
      if (!w) return;
      this.#waiting.delete(m.id);
      if (m.ok) w.resolve(m.value);
      else w.reject(new Error(`dev AS: ${m.error}`));
    });
    child.on('exit', (code, signal) => {
      for (const w of this.#waiting.values()) w.reject(new Error(`dev AS exited (${code ?? signal})`));
      this.#waiting.clear();
    });
  }

  /** Forks the AS and pins it (every thread) to the load CPU. */
  static async start(options: AsOptions): Promise<AsProcess> {
    const child = fork(fileURLToPath(import.meta.url), [JSON.stringify(options)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const ready = await new Promise<{ issuer: string; url: string; bareUpstreamUrl: string }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('dev AS did not start within 20 s')), 20_000);
      child.once('message', (m: { issuer: string; url: string; bareUpstreamUrl: string }) => (clearTimeout(timer), resolve(m)));
      child.once('exit', (code) => (clearTimeout(timer), reject(new Error(`dev AS exited at start (${code})`))));
    });
    pinProcess(child.pid!, 'load');
    return new AsProcess(child, ready.issuer, ready.url, ready.bareUpstreamUrl);
  }

  #call<T>(request: Operation): Promise<T> {
    const id = ++this.#next;
    return new Promise<T>((resolve, reject) => {
      this.#waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.send({ ...request, id });
    });
  }

  stats = (): Promise<DevStats> => this.#call({ op: 'stats' });
  /** `count` new ASPs of `username`, the secrets only. */
  appPasswords = (username: string, count: number): Promise<string[]> => this.#call({ op: 'appPasswords', username, count });
  /** `count` more users like alice (same permissions), `bench-user-<i>`: their names and passwords. */
  users = (count: number): Promise<{ username: string; password: string }[]> => this.#call({ op: 'users', count });
  keys = (): Promise<AsKeys> => this.#call({ op: 'keys' });
  setResourceServerJwksUrl = (url: string): Promise<void> => this.#call({ op: 'jwks', url });
  /** The AS process's CPU time so far (every thread), µs. */
  cpuMicros = (): Promise<number> => this.#call({ op: 'cpu' });

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    await this.#call({ op: 'close' }).catch(() => undefined);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

async function child(): Promise<void> {
  const options = JSON.parse(process.argv[2] ?? '{}') as AsOptions;
  const dev = await startDevServer({ audience: options.audience, users: defaultDevUsers(), clients: options.clients, lockoutThreshold: options.lockoutThreshold });
  const bareUpstream = createServer((request, response) => {
    // `?waitMs=N`: the answer after N ms, as an AS that takes that long (its CPU idle meanwhile).
    const waitMs = Number(/[?&]waitMs=(\d+(?:\.\d+)?)/.exec(request.url ?? '')?.[1] ?? 0);
    request.resume();
    request.on('end', () => {
      const answer = () => {
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end('{"active":false}');
      };
      if (waitMs > 0) setTimeout(answer, waitMs);
      else answer();
    });
  });
  await new Promise<void>((resolve) => bareUpstream.listen(0, '127.0.0.1', resolve));
  const bareUpstreamUrl = `http://127.0.0.1:${(bareUpstream.address() as { port: number }).port}/`;
  const send = (reply: Reply) => process.send!(reply);
  let users = 0;
  process.on('message', (m: Request) => {
    void (async () => {
      try {
        let value: unknown;
        switch (m.op) {
          case 'stats':
            value = dev.stats();
            break;
          case 'appPasswords':
            value = Array.from({ length: m.count }, () => dev.createAppPassword(m.username).password);
            break;
          case 'users': {
            const made: { username: string; password: string }[] = [];
            for (let i = 0; i < m.count; i++) {
              const user = { username: `bench-user-${++users}`, password: `bench-password-${users}-${randomUUID()}` };
              dev.addUser({ ...user, permissions: ['read:repo', 'write:repo', 'read:mail', 'send:mail'] });
              made.push(user);
            }
            value = made;
            break;
          }
          case 'keys':
            value = { privateJwk: await exportJWK(dev.signingKey.privateKey), publicJwk: dev.signingKey.publicJwk };
            break;
          case 'jwks':
            dev.setResourceServerJwksUrl(m.url);
            break;
          case 'cpu': {
            const u = process.cpuUsage();
            value = u.user + u.system;
            break;
          }
          case 'close':
            bareUpstream.close();
            bareUpstream.closeAllConnections();
            await dev.close();
            send({ id: m.id, ok: true, value: undefined });
            process.disconnect();
            return;
        }
        send({ id: m.id, ok: true, value });
      } catch (err) {
        send({ id: m.id, ok: false, error: err instanceof Error ? err.message : String(err) });
      }
    })();
  });
  // The bench gone (its IPC channel closed): nothing left to serve.
  process.on('disconnect', () => void dev.close().finally(() => process.exit(0)));
  process.send!({ issuer: dev.issuer, url: dev.url, bareUpstreamUrl });
}

if (process.send !== undefined && process.argv[1] === fileURLToPath(import.meta.url)) await child();
