import { Agent, fetch as undiciFetch } from 'undici';
import { UpstreamError } from '../errors.js';

/** Which authorization-server endpoint a call goes to; a fixed set, safe as a metric label. */
export type Endpoint = 'discovery' | 'token' | 'introspection' | 'jwks';
/** How a call ended; a fixed set, safe as a metric label. */
export type CallOutcome = 'ok' | 'client_error' | 'server_error' | 'timeout' | 'unreachable' | 'too_large';

export interface CallObserver {
  (endpoint: Endpoint, outcome: CallOutcome, seconds: number): void;
}

export type FetchLike = (url: string, init: { method?: string; headers?: Record<string, string> | Headers; body?: unknown; signal?: AbortSignal | null; redirect?: string }) => Promise<Response>;

/** Largest answer read from the authorization server. A JWKS or an introspection answer is a few KiB. */
export const MAX_RESPONSE_BYTES = 256 * 1024;

/**
 * One keep-alive connection pool for every call to the authorization server. Each call gets a
 * deadline covering connect, headers and the whole body (a slow-drip body times out too), never
 * follows redirects, and reads at most MAX_RESPONSE_BYTES. Failures become UpstreamError.
 */
export class UpstreamHttp {
  readonly #agent: Agent;
  readonly #timeoutMs: number;
  readonly #observe: CallObserver;

  constructor(options: { timeoutMs: number; observe?: CallObserver }) {
    this.#timeoutMs = options.timeoutMs;
    this.#observe = options.observe ?? (() => {});
    this.#agent = new Agent({
      keepAliveTimeout: 30_000,
      connections: 128,
      connect: { timeout: options.timeoutMs },
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
    });
  }

  /** A fetch bound to one endpoint label, in the shape oauth4webapi's and jose's `customFetch` take. */
  fetcher(endpoint: Endpoint): FetchLike {
    return (url, init) => this.#call(endpoint, url, init);
  }

  async #call(endpoint: Endpoint, url: string, init: Parameters<FetchLike>[1]): Promise<Response> {
    const started = performance.now();
    const deadline = AbortSignal.timeout(this.#timeoutMs);
    const signal = init.signal ? AbortSignal.any([init.signal, deadline]) : deadline;
    const done = (outcome: CallOutcome) => this.#observe(endpoint, outcome, (performance.now() - started) / 1000);
    let response;
    let body: Uint8Array;
    try {
      response = await undiciFetch(url, {
        method: init.method ?? 'GET',
        headers: init.headers as Record<string, string> | undefined,
        body: init.body as string | URLSearchParams | undefined,
        redirect: 'manual',
        signal,
        dispatcher: this.#agent,
      });
      body = await readCapped(response.body, MAX_RESPONSE_BYTES);
    } catch (err) {
      if (err instanceof ResponseTooLarge) {
        done('too_large');
        throw new UpstreamError(`${endpoint} answer larger than ${MAX_RESPONSE_BYTES} bytes`, endpoint, 'bad_response');
      }
      const timedOut = deadline.aborted || isTimeout(err);
      done(timedOut ? 'timeout' : 'unreachable');
      throw new UpstreamError(
        timedOut ? `${endpoint} did not answer within ${this.#timeoutMs} ms` : `${endpoint} unreachable: ${describe(err)}`,
        endpoint,
        timedOut ? 'timeout' : 'unreachable',
        { cause: err },
      );
    }
    done(response.status >= 500 ? 'server_error' : response.status >= 400 ? 'client_error' : 'ok');
    // Hand back a standard Response over the bytes already read, so parsers never touch the socket.
    const nullBody = response.status === 204 || response.status === 205 || response.status === 304;
    return new Response(nullBody ? null : body, { status: response.status, statusText: response.statusText, headers: response.headers as unknown as Headers });
  }

  async close(): Promise<void> {
    await this.#agent.close();
  }
}

class ResponseTooLarge extends Error {}

async function readCapped(stream: ReadableStream<Uint8Array> | null, limit: number): Promise<Uint8Array> {
  if (!stream) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of stream as AsyncIterable<Uint8Array>) {
    size += chunk.byteLength;
    if (size > limit) throw new ResponseTooLarge();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function isTimeout(err: unknown): boolean {
  const e = err as { name?: string; code?: string; cause?: { name?: string; code?: string } };
  const names = [e?.name, e?.code, e?.cause?.name, e?.cause?.code];
  return names.some((n) => n === 'TimeoutError' || n === 'UND_ERR_CONNECT_TIMEOUT' || n === 'UND_ERR_HEADERS_TIMEOUT' || n === 'UND_ERR_BODY_TIMEOUT');
}

/** A short, secret-free description of a network failure (error codes only, never bodies). */
function describe(err: unknown): string {
  const e = err as { code?: string; cause?: { code?: string; message?: string } };
  return e?.cause?.code ?? e?.code ?? (err instanceof Error ? err.name : 'error');
}
