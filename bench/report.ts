/** The bench's table and bench-results.json: rows as figures add them, printed once at the end. */

export interface Row {
  figure: string;
  measure: string;
  value: string;
  unit: string;
  target?: string;
  /**
   * true/false: PASS/FAIL; 'invalid': this figure's own checks failed (the reason is in its rows).
   * A target row with `gated` prints INVALID instead of PASS/FAIL when the run as a whole is not
   * valid (validity.ts).
   */
  pass?: boolean | 'invalid';
  gated?: boolean;
}

export const rows: Row[] = [];
/** Everything measured, by figure name, for bench-results.json. */
export const results: Record<string, unknown> = {};

export const fmt = (value: number): string => (Number.isInteger(value) ? String(value) : value.toFixed(Math.abs(value) < 10 ? 2 : 1));

export function row(figure: string, measure: string, value: number | string, unit: string, target?: string, pass?: boolean | 'invalid', options: { gated?: boolean } = {}): void {
  const shown = typeof value === 'number' ? fmt(value) : value;
  rows.push({ figure, measure, value: shown, unit, ...(target === undefined ? {} : { target }), ...(pass === undefined ? {} : { pass }), ...(options.gated ? { gated: true } : {}) });
}

/** A target that depends on load measurements: INVALID unless the whole run is valid. */
export function targetRow(figure: string, measure: string, value: number | string, unit: string, target: string, pass: boolean | 'invalid'): void {
  row(figure, measure, value, unit, target, pass, { gated: true });
}

/** What a row's result column says, given the run's verdict. */
export function resultOf(r: Row, runValid: boolean): string {
  if (r.pass === undefined) return '';
  if (r.pass === 'invalid' || (r.gated && !runValid)) return 'INVALID';
  return r.pass ? 'PASS' : 'FAIL';
}

export function printTable(runValid: boolean): void {
  const header = ['#', 'measure', 'value', 'unit', 'target', 'result'];
  // By figure (in the order they were added within one): figures do not run in number order.
  const sorted = [...rows].sort((a, b) => Number(a.figure) - Number(b.figure));
  const lines = sorted.map((r) => [r.figure, r.measure, r.value, r.unit, r.target ?? '', resultOf(r, runValid)]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 2 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  let last = '';
  for (const l of lines) {
    if (last !== '' && l[0] !== last) console.log('');
    last = l[0]!;
    console.log(line(l));
  }
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export const ascending = (values: readonly number[]): number[] => [...values].sort((a, b) => a - b);
