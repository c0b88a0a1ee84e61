/**
 * README.md's five-minute tour, run as written: `npm start` (dev mode), then each `$` command of the
 * tour's console blocks (marked `<!-- recipe-test: tour-… -->`) with bash, and its answer compared
 * with the output the README prints.
 *
 * Substituted: credgate's address (`127.0.0.1:8080` → the run-time port given to `npm start` as PORT),
 * the dev AS's port (`<dev AS port>` → the one the banner printed), and app-specific passwords
 * (`<the ASP printed at start-up>` → bob's from the banner; `<alice's new ASP>` → the one the
 * previous command created, read from its output).
 * `npm start` runs with `--ignore-scripts`: its `prestart` would rebuild dist/ under the tests.
 *
 * Compared: the status line; every header line the README shows (it shows a selection: others may
 * be there too); the body, as JSON, where a `…` ending means "these fields, and more", and a string
 * ending in `…` means "a string starting so".
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startProcess, startWithPortRetry, type ManagedProcess } from '../fixtures/processes.js';
import { documentedBlock, REPOSITORY, runScript, substitute, type Substitution } from '../fixtures/recipeDocs.js';

interface Step {
  command: string;
  expected: string[];
}

/** A console block's `$` commands (with `\` continuations) and the lines printed after each. */
function consoleSteps(text: string): Step[] {
  const steps: Step[] = [];
  let continuing = false;
  for (const line of text.replace(/\n$/, '').split('\n')) {
    const last = steps.at(-1);
    if (continuing && last) {
      last.command += `\n${line}`;
      continuing = line.endsWith('\\');
    } else if (line.startsWith('$ ')) {
      steps.push({ command: line.slice(2), expected: [] });
      continuing = line.endsWith('\\');
    } else {
      assert.ok(last, `output before the first command: ${line}`);
      last.expected.push(line);
    }
  }
  return steps;
}

/** The README's output against curl's: status line, the headers shown, the body. */
function assertOutput(expected: string[], actual: string, command: string): void {
  let body = expected;
  let actualBody = actual;
  if (expected[0]?.startsWith('HTTP/')) {
    const split = actual.indexOf('\r\n\r\n');
    assert.ok(split > 0, `${command}: no HTTP head in\n${actual}`);
    const head = actual.slice(0, split).split('\r\n');
    actualBody = actual.slice(split + 4);
    assert.equal(head[0], expected[0], command);
    const end = expected.indexOf('');
    const shown = expected.slice(1, end === -1 ? undefined : end);
    for (const header of shown) {
      const [name] = header.split(':', 1);
      const found = head.slice(1).filter((h) => h.toLowerCase().startsWith(`${name!.toLowerCase()}:`));
      assert.ok(
        found.some((h) => h.slice(name!.length + 1).trim() === header.slice(name!.length + 1).trim()),
        `${command}: the README shows "${header}"; curl got ${found.length ? found.join(' | ') : `no ${name}`}`,
      );
    }
    body = end === -1 ? [] : expected.slice(end + 1);
  }
  const text = body.join('');
  if (text === '') return;
  if (text.endsWith(',…}')) {
    const shown = JSON.parse(`${text.slice(0, -3)}}`) as Record<string, unknown>;
    const got = JSON.parse(actualBody) as Record<string, unknown>;
    for (const [key, value] of Object.entries(shown)) assertJsonValue(got[key], value, `${command}: "${key}"`);
  } else {
    const shown = JSON.parse(text) as unknown;
    const got = JSON.parse(actualBody) as unknown;
    if (shown !== null && typeof shown === 'object' && !Array.isArray(shown) && got !== null && typeof got === 'object') {
      assert.deepEqual(Object.keys(got).sort(), Object.keys(shown).sort(), command);
      for (const [key, value] of Object.entries(shown)) assertJsonValue((got as Record<string, unknown>)[key], value, `${command}: "${key}"`);
    } else assert.deepEqual(got, shown, command);
  }
}

/** `"asp_…"` in the README: a string that starts with `asp_`. */
function assertJsonValue(got: unknown, shown: unknown, message: string): void {
  if (typeof shown === 'string' && shown.endsWith('…')) {
    assert.equal(typeof got, 'string', message);
    assert.ok((got as string).startsWith(shown.slice(0, -1)), `${message}: ${JSON.stringify(got)} does not start with ${JSON.stringify(shown.slice(0, -1))}`);
  } else assert.deepEqual(got, shown, message);
}

describe("README.md's five-minute tour, run as written against `npm start`", { timeout: 60_000 }, () => {
  let start: ManagedProcess;
  let port: number;
  let bobAsp: string;
  let devAsPort: string;

  before(async () => {
    // PORT picked at run time; if another process takes it before credgate listens (EADDRINUSE),
    // `npm start` exits and is run again with another.
    ({ process: start, port } = await startWithPortRetry(
      'npm start (the dev mode banner)',
      (port) => {
        const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', PORT: String(port), npm_config_update_notifier: 'false' };
        const started = startProcess('npm', ['start', '--ignore-scripts'], { cwd: REPOSITORY, env });
        return { process: started, describe: () => started.output() };
      },
      async (started) => /^={20,}\n(?:.*\n)+={20,}$/m.test(started.process.output()) && /curl -s -X POST/.test(started.process.output()),
      20_000,
    ));
    const asp = /curl -i -u 'bob:([^']+)'/.exec(start.output());
    assert.ok(asp, start.output());
    bobAsp = asp[1]!;
    const devAs = /dev authorization server: +http:\/\/127\.0\.0\.1:(\d+)\//.exec(start.output());
    assert.ok(devAs, start.output());
    devAsPort = devAs[1]!;
    assert.match(start.output(), new RegExp(`credgate: +http://127\\.0\\.0\\.1:${port}\\n`), 'dev mode listens where PORT says');
  });

  after(async () => {
    await start?.stop();
  }, { timeout: 10_000 });

  const table = (): Substitution[] => [{ kind: 'port', from: '127.0.0.1:8080', to: `127.0.0.1:${port}` }];

  for (const name of ['tour-password', 'tour-app-password', 'tour-json-api', 'tour-denials', 'tour-new-app-password']) {
    test(`README ${name}: each command answers what the README prints`, { timeout: 20_000 }, async () => {
      const block = documentedBlock('README.md', name);
      assert.equal(block.lang, 'console');
      const extra: Substitution[] = [];
      if (block.text.includes('<the ASP printed at start-up>')) extra.push({ kind: 'secret', from: '<the ASP printed at start-up>', to: bobAsp });
      if (block.text.includes('<dev AS port>')) extra.push({ kind: 'port', from: '<dev AS port>', to: devAsPort });
      const steps = consoleSteps(substitute(block.text, [...(block.text.includes('127.0.0.1:8080') ? table() : []), ...extra], block.where));
      assert.ok(steps.length > 0);
      /** Secrets the README names by what printed them: `<alice's new ASP>` is the password the previous command answered. */
      const printed = new Map<string, string>();
      for (const step of steps) {
        let command = step.command;
        for (const [placeholder, value] of printed) command = command.replaceAll(placeholder, value);
        const result = await runScript(command, { cwd: REPOSITORY, timeoutMs: 15_000 });
        assert.equal(result.code, 0, `${command}: ${result.stderr}`);
        // `"password":"<alice's new ASP>"`: whatever password was answered, remembered under that name.
        const expected = step.expected.map((line) => line.replace(/"password":"<([^>"]+)>"/g, (_, name: string) => {
          const value = (JSON.parse(result.stdout) as Record<string, unknown>).password;
          assert.equal(typeof value, 'string', `${command}: a password for <${name}>`);
          printed.set(`<${name}>`, value as string);
          return `"password":${JSON.stringify(value)}`;
        }));
        assertOutput(expected, result.stdout, command);
      }
    });
  }

  test('the comparison can fail: an answer that differs from the README is caught', () => {
    assert.throws(() => assertOutput(['HTTP/1.1 200 OK', 'x-auth-user: alice'], 'HTTP/1.1 200 OK\r\nx-auth-user: bob\r\n\r\n{}', 'deny beside the allow'), /x-auth-user/);
    assert.throws(() => assertOutput(['{"allow":true,"reason":"ok",…}'], '{"allow":false,"reason":"ok"}', 'json'), /allow/);
    assert.throws(() => assertOutput(['HTTP/1.1 401 Unauthorized'], 'HTTP/1.1 200 OK\r\n\r\n', 'status'));
  });
});
