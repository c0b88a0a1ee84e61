import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { LineDestination, LOG_WRITE_DELAY_MS } from '../../src/log.js';

const LOG_MODULE = fileURLToPath(new URL('../../src/log.js', import.meta.url));

/** Runs `code` (an ES module that may use `createLogger`) in a child whose stdout is a pipe, as under journald or Docker. */
function child(code: string, options: { readAfterMs?: number; closeStdout?: boolean } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, ['--input-type=module', '-e', `import { createLogger } from ${JSON.stringify(LOG_MODULE)};\n${code}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    proc.stderr.on('data', (c: Buffer) => (err += c.toString()));
    // Not reading stdout for a while lets the pipe fill up: the child's writes must then wait, not block it or get lost.
    proc.stdout.pause();
    if (options.closeStdout) proc.stdout.destroy();
    else setTimeout(() => proc.stdout.on('data', (c: Buffer) => out.push(c)).resume(), options.readAfterMs ?? 0);
    const timer = setTimeout(() => proc.kill('SIGKILL'), 30_000);
    proc.on('error', reject);
    proc.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out).toString(), stderr: err });
    });
  });
}

test('lines written together go out in one write, in order, within the write delay, and not before the write delay', async () => {
  const writes: string[] = [];
  const writtenAt: number[] = [];
  const destination = new LineDestination((bytes) => {
    writes.push(bytes.toString());
    writtenAt.push(performance.now());
  });
  const firstLineAt = performance.now();
  destination.write('a\n');
  destination.write('b\n');
  assert.deepEqual(writes, [], 'nothing is written on the turn the lines came in');
  await new Promise((resolve) => setImmediate(resolve));
  // On a busy machine the next turn can come after the write delay: then a and b are out already
  // and c waits for its own write. Either way nothing went out before the delay.
  const batchStillOpen = writes.length === 0;
  destination.write('c\n');
  await sleep(LOG_WRITE_DELAY_MS + 40);
  assert.deepEqual(writes, batchStillOpen ? ['a\nb\nc\n'] : ['a\nb\n', 'c\n'], 'in order, a line within the delay joining the waiting batch');
  assert.ok(writtenAt[0]! - firstLineAt >= LOG_WRITE_DELAY_MS - 1, `written ${(writtenAt[0]! - firstLineAt).toFixed(1)} ms after the first line, before the write delay`);
  writes.length = 0;
  destination.write('d\n');
  await sleep(LOG_WRITE_DELAY_MS + 40);
  assert.deepEqual(writes, ['d\n'], 'a line after a write waits for its own');
  destination.flushSync();
  assert.equal(writes.length, 1, 'nothing waiting: nothing written');
});

test('a batch is written as soon as it is full, a line longer than a batch alone, and UTF-8 survives the batching', async () => {
  const writes: string[] = [];
  const destination = new LineDestination((bytes) => writes.push(bytes.toString()));
  const line = `{"login":"jos\u00e9 \u{1F511}","pad":"${'x'.repeat(1000)}"}\n`;
  for (let i = 0; i < 100; i++) destination.write(line);
  assert.ok(writes.length >= 1, 'about 100 KiB of lines did not wait for the timer');
  destination.write(`${'y'.repeat(100_000)}\n`);
  destination.write('last\n');
  await sleep(LOG_WRITE_DELAY_MS + 40);
  const all = writes.join('');
  assert.equal(all, line.repeat(100) + `${'y'.repeat(100_000)}\n` + 'last\n', 'every byte, in order');
  assert.ok(writes.every((w) => w.endsWith('\n')), 'no write ends inside a line');
});

test('lines still waiting when the process exits are written: process.exit, an uncaught error, and a natural end', async () => {
  const exited = await child(`const log = createLogger({ level: 'info' }); log.info({ n: 1 }, 'before exit'); process.exit(3);`);
  assert.equal(exited.code, 3);
  assert.match(exited.stdout, /"n":1,"msg":"before exit"/);

  const crashed = await child(`const log = createLogger({ level: 'info' }); log.info({ n: 2 }, 'before the crash'); setImmediate(() => { throw new Error('boom'); });`);
  assert.equal(crashed.code, 1);
  assert.match(crashed.stderr, /boom/);
  assert.match(crashed.stdout, /"n":2,"msg":"before the crash"/);

  const ended = await child(`const log = createLogger({ level: 'info' }); log.info({ n: 3 }, 'last words');`);
  assert.equal(ended.code, 0);
  assert.match(ended.stdout, /"n":3,"msg":"last words"/);
});

test('a reader that stops reading neither blocks the process nor loses a line: every line arrives, whole and in order', async () => {
  // 8 MiB of lines (the pipe holds 64 KiB) written over 100 ms while the parent reads nothing for
  // 1.5 s; a timer in the child measures how long its event loop was held at most.
  const lines = 20_000;
  const run = await child(
    `const log = createLogger({ level: 'info' });
     let last = performance.now(), worst = 0;
     const tick = setInterval(() => { const now = performance.now(); worst = Math.max(worst, now - last); last = now; }, 5);
     const pad = 'x'.repeat(400);
     let i = 0;
     const burst = setInterval(() => {
       for (let k = 0; k < ${lines / 20}; k++) log.info({ seq: i++, pad }, 'line');
       if (i >= ${lines}) { clearInterval(burst); setTimeout(() => { clearInterval(tick); process.stderr.write('worst ' + worst.toFixed(0) + '\\n'); }, 1700); }
     }, 5);`,
    { readAfterMs: 1500 },
  );
  assert.equal(run.code, 0, run.stderr);
  const worst = Number(/worst (\d+)/.exec(run.stderr)?.[1]);
  assert.ok(worst < 400, `the child's event loop was held ${worst} ms while its stdout was full`);
  const got = run.stdout.split('\n').filter(Boolean).map((line) => (JSON.parse(line) as { seq: number }).seq);
  assert.equal(got.length, lines);
  assert.ok(got.every((seq, index) => seq === index), 'in order, none missing or repeated');
});

test('a reader that stalls does not grow the process without bound: past 16 MiB unread, whole lines are dropped, counted and reported', async () => {
  // 40 MiB of lines while the parent reads nothing for 2 s: what stdout holds unread stays near the
  // limit; what arrives is whole lines in order, then a warning line that counts the lines missing.
  const lines = 100_000;
  const run = await child(
    `import { droppedLogLines, LOG_QUEUE_LIMIT_BYTES } from ${JSON.stringify(LOG_MODULE)};
     const log = createLogger({ level: 'info' });
     const pad = 'x'.repeat(400);
     let i = 0, queued = 0;
     const burst = setInterval(() => {
       for (let k = 0; k < 5000; k++) log.info({ seq: i++, pad }, 'line');
       queued = Math.max(queued, process.stdout.writableLength);
       if (i >= ${lines}) {
         clearInterval(burst);
         // After the reader is back: one more line, which carries the report of the dropped ones.
         setTimeout(() => { log.info({ seq: i++, pad }, 'line'); process.stderr.write('dropped ' + droppedLogLines() + ' queued ' + queued + ' limit ' + LOG_QUEUE_LIMIT_BYTES + '\\n'); }, 3000);
       }
     }, 5);`,
    { readAfterMs: 2000 },
  );
  assert.equal(run.code, 0, run.stderr);
  const [, dropped, queued, limit] = /dropped (\d+) queued (\d+) limit (\d+)/.exec(run.stderr)!.map(Number);
  assert.ok(dropped! > 0, 'lines were dropped');
  // At most one batch (64 KiB) more than the limit waits.
  assert.ok(queued! <= limit! + 64 * 1024, `${queued} bytes waited unread (limit ${limit})`);
  const parsed = run.stdout.split('\n').filter(Boolean).map((line) => JSON.parse(line) as { seq?: number; droppedLines?: number; level: number; msg: string });
  const reports = parsed.filter((l) => l.droppedLines !== undefined);
  assert.equal(reports.length, 1);
  assert.equal(reports[0]!.droppedLines, dropped);
  assert.equal(reports[0]!.level, 40);
  assert.match(reports[0]!.msg, /log lines dropped/);
  const seqs = parsed.filter((l) => l.seq !== undefined).map((l) => l.seq!);
  assert.equal(seqs.length + dropped!, lines + 1, 'every line arrived or was counted as dropped');
  assert.ok(seqs.every((seq, index) => index === 0 || seq > seqs[index - 1]!), 'in order, none repeated');
  assert.equal(seqs.at(-1), lines, 'the line after the reader came back arrived');
  // The report comes right before the first line written after the drop.
  const at = parsed.indexOf(reports[0]!);
  assert.equal(parsed[at + 1]!.seq, seqs[seqs.indexOf(parsed[at - 1]!.seq!) + 1]);
});

test('a reader of stdout that goes away (EPIPE) does not crash the process: lines are dropped, the process goes on', async () => {
  const run = await child(
    `const log = createLogger({ level: 'info' });
     let n = 0;
     const t = setInterval(() => { for (let k = 0; k < 200; k++) log.info({ n: n++ }, 'line'); }, 5);
     setTimeout(() => { clearInterval(t); process.stderr.write('still here after ' + n + ' lines\\n'); }, 400);`,
    { closeStdout: true },
  );
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stderr, /still here after \d+ lines/);
});
