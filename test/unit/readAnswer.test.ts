import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { ReadAnswer } from '../../src/upstream/http.js';

const RUNS = Number(process.env.CREDGATE_PROPERTY_RUNS ?? 1000);

/** What a body read gives: its value, or the kind of error it threw. */
async function outcome<T>(read: () => Promise<T>): Promise<{ ok: T } | { threw: string }> {
  try {
    return { ok: await read() };
  } catch (err) {
    return { threw: (err as Error).constructor.name };
  }
}

/** The body as the call to the AS hands it over: decoded, and parsed when it is a JSON object or array. */
function preRead(bytes: Uint8Array): { text: string; json: unknown } {
  const text = new TextDecoder().decode(bytes);
  let json: unknown;
  if (/^[ \t\r\n]*[[{]/.test(text)) {
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
  }
  return { text, json };
}
let withRead = false;
/** A ReadAnswer over `bytes`, given the body already read when `withRead` is set (as UpstreamHttp gives it). */
const answer = (bytes: Uint8Array, status: number) => new ReadAnswer(bytes, { status, headers: new Headers({ 'content-type': 'application/json' }) }, withRead ? preRead(bytes) : undefined) as unknown as Response;
/** The standard Response credgate handed the parsers before (no body for the statuses that have none). */
const standard = (bytes: Uint8Array, status: number) => new Response(status === 204 || status === 205 || status === 304 ? null : bytes, { status, headers: new Headers({ 'content-type': 'application/json' }) });

/** Bodies an AS might send and some it should not: JSON, broken JSON, a BOM, invalid UTF-8, nothing. */
const bodies = fc.oneof(
  fc.json().map((j) => Buffer.from(j)),
  fc.json().map((j) => Buffer.from(`\uFEFF${j}`)),
  fc.string({ unit: 'binary', maxLength: 80 }).map((s) => Buffer.from(s)),
  fc.uint8Array({ maxLength: 80 }).map((b) => Buffer.from(b)),
  fc.constant(Buffer.alloc(0)),
);
const statuses = fc.constantFrom(200, 201, 204, 400, 401, 404, 500, 503);

test('ReadAnswer reads like a standard Response over the same bytes: text, json, arrayBuffer, clone, status, headers', async () => {
  await fc.assert(
    fc.asyncProperty(bodies, statuses, fc.boolean(), async (bytes, status, read) => {
      withRead = read;
      const ours = answer(bytes, status);
      assert.ok(ours instanceof Response);
      assert.equal(ours.status, status);
      assert.equal(ours.ok, status < 300);
      assert.equal(ours.headers.get('content-type'), 'application/json');
      assert.equal(ours.clone().status, status);
      assert.equal(ours.clone().headers.get('content-type'), 'application/json');
      const empty = status === 204;
      if (empty && bytes.length > 0) return; // a 204 with a body: the client never hands one over
      assert.deepEqual(await outcome(() => answer(bytes, status).text()), await outcome(() => standard(bytes, status).text()));
      assert.deepEqual(await outcome(() => answer(bytes, status).json()), await outcome(() => standard(bytes, status).json()));
      const buffer = async (r: Response) => Buffer.from(await r.arrayBuffer()).toString('hex');
      assert.deepEqual(await outcome(() => buffer(answer(bytes, status))), await outcome(() => buffer(standard(bytes, status))));
      assert.deepEqual(await outcome(() => answer(bytes, status).clone().json()), await outcome(() => standard(bytes, status).clone().json()));
    }),
    { numRuns: RUNS },
  );
});

test('a body is read once, as with a standard Response; a clone made before reads its own copy', async () => {
  withRead = true;
  const ours = answer(Buffer.from('{"active":true}'), 200);
  const copy = ours.clone();
  assert.equal(ours.bodyUsed, false);
  assert.deepEqual(await ours.json(), { active: true });
  assert.equal(ours.bodyUsed, true);
  await assert.rejects(ours.text(), TypeError);
  await assert.rejects(ours.json(), TypeError);
  await assert.rejects(ours.arrayBuffer(), TypeError);
  assert.throws(() => ours.clone(), TypeError);
  assert.deepEqual(await copy.json(), { active: true });
});

test('a read answer shares no bytes with the caller: the buffer handed out is a copy', async () => {
  const bytes = Buffer.from('{"a":1}');
  const out = new Uint8Array(await answer(bytes, 200).arrayBuffer());
  out[2] = 0x62;
  assert.equal(bytes.toString(), '{"a":1}');
});

test("undici's answer headers arrive as a fetch Headers would hold them: repeated ones joined, names case-insensitive", () => {
  const raw = { 'content-type': 'application/json', 'www-authenticate': ['Bearer error="invalid_token"', 'DPoP algs="ES256"'], 'x-absent': undefined };
  const ours = new ReadAnswer(Buffer.from('{}'), { status: 401, headers: raw }) as unknown as Response;
  const expected = new Headers();
  expected.append('content-type', 'application/json');
  for (const v of raw['www-authenticate']) expected.append('www-authenticate', v);
  assert.deepEqual([...ours.headers], [...expected]);
  assert.equal(ours.headers.get('WWW-Authenticate'), 'Bearer error="invalid_token", DPoP algs="ES256"');
  assert.equal(ours.headers.has('x-absent'), false);
  assert.deepEqual([...ours.clone().headers], [...expected]);
});
