import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { UpstreamError } from '../../src/errors.js';
import { UpstreamHttp } from '../../src/upstream/http.js';

const RUNS = Number(process.env.CREDGATE_PROPERTY_RUNS ?? 300);

/**
 * Property: what credgate's call to the AS hands the protocol parsers is exactly what a standard
 * fetch Response over the same bytes gives them, and an answer whose top-level object names a member
 * twice never reaches them, whatever comes before it that the parsers skip (a byte-order mark,
 * whitespace) and however the name is spelled (escapes). A BOM once hid such an answer from the check.
 */

let body: Buffer = Buffer.alloc(0);
let server: Server;
let url: string;
const http = new UpstreamHttp({ timeoutMs: 5000 });

before(async () => {
  server = createServer((_request, response) => {
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as { port: number }).port}/introspect`;
});
after(async () => {
  await http.close();
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

/** A member name written as JSON, plainly or with its first character as a \u escape. */
const spelled = (name: string, escaped: boolean) =>
  escaped && name.length > 0 ? `"\\u${name.charCodeAt(0).toString(16).padStart(4, '0')}${JSON.stringify(name).slice(2)}` : JSON.stringify(name);

/** A top-level object from members, some names possibly repeated, and whether one is. */
const answers = fc
  .record({
    members: fc.array(fc.tuple(fc.constantFrom('active', 'sub', 'aud', 'username', 'scope', 'a', 'é'), fc.jsonValue({ maxDepth: 2 }), fc.boolean()), { maxLength: 6 }),
    prefix: fc.constantFrom('', '\uFEFF', ' ', '\n\t', '\uFEFF \r\n'),
  })
  .map(({ members, prefix }) => {
    const text = `${prefix}{${members.map(([name, value, escaped]) => `${spelled(name, escaped)}:${JSON.stringify(value)}`).join(',')}}`;
    const names = members.map(([name]) => name);
    return { text, repeats: new Set(names).size !== names.length };
  });

test('an answer naming a member twice is refused, behind a BOM or whitespace too; any other reads as a standard Response over its bytes', async () => {
  const call = http.fetcher('introspection');
  await fc.assert(
    fc.asyncProperty(answers, async ({ text, repeats }) => {
      body = Buffer.from(text, 'utf8');
      let response: Response;
      try {
        response = await call(url, { method: 'POST', body: 'token=x' });
      } catch (err) {
        assert.ok(err instanceof UpstreamError && err.failure === 'bad_response' && /repeats the JSON member/.test(err.message), String(err));
        assert.ok(repeats, `refused an answer that repeats nothing: ${JSON.stringify(text)}`);
        return;
      }
      assert.ok(!repeats, `an answer that repeats a member reached the parsers: ${JSON.stringify(text)}`);
      assert.deepEqual(await response.json(), await new Response(body).json());
    }),
    { numRuns: RUNS },
  );
});
