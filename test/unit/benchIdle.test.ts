import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseWakeInterrupts } from '../../bench/idle.js';

// The bench's count of wake-up interrupts per CPU (figures 3–6), read from /proc/interrupts.
const SAMPLE = `            CPU0       CPU1
   0:         45          0   IO-APIC   2-edge      timer
 NMI:          0          0   Non-maskable interrupts
 LOC:    9752721    8482235   Local timer interrupts
 RES:    4143895    4098819   Rescheduling interrupts
 CAL:    6865030   53832438   Function call interrupts
 TLB:       1204        998   TLB shootdowns
 ERR:          0
`;

test('wake-up interrupts are the rescheduling and function-call lines, summed per CPU', () => {
  assert.deepEqual(parseWakeInterrupts(SAMPLE), [4143895 + 6865030, 4098819 + 53832438]);
});

test('no such lines (another architecture, no /proc): no counts, so figures print NaN rather than a wrong number', () => {
  assert.deepEqual(parseWakeInterrupts(' LOC: 1 2 Local timer interrupts\n'), []);
  assert.deepEqual(parseWakeInterrupts(''), []);
});
