/** The bench's table and bench-results.json: rows as figures add them, printed once at the end. */

export interface Row {
  figure: string;
  measure: string;
  value: string;
  unit: string;
  target?: string;
  pass?: boolean;
}

export const rows: Row[] = [];
/** Everything measured, by figure name, for bench-results.json. */
export const results: Record<string, unknown> = {};

export function row(figure: string, measure: string, value: number | string, unit: string, target?: string, pass?: boolean): void {
  const shown = typeof value === 'number' ? (Number.isInteger(value) ? String(value) : value.toFixed(value < 10 ? 2 : 1)) : value;
  rows.push({ figure, measure, value: shown, unit, ...(target === undefined ? {} : { target }), ...(pass === undefined ? {} : { pass }) });
}

export function printTable(): void {
  const header = ['#', 'measure', 'value', 'unit', 'target', 'result'];
  const lines = rows.map((r) => [r.figure, r.measure, r.value, r.unit, r.target ?? '', r.pass === undefined ? '' : r.pass ? 'PASS' : 'FAIL']);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const fmt = (cells: string[]) => cells.map((c, i) => (i === 2 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  console.log(fmt(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  let last = '';
  for (const l of lines) {
    if (last !== '' && l[0] !== last) console.log('');
    last = l[0]!;
    console.log(fmt(l));
  }
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export const ascending = (values: readonly number[]): number[] => [...values].sort((a, b) => a - b);
