/**
 * The benchmark's table (metric | runc | gVisor | hull | hull/runc | target | met) and its targets
 * (issue #5). A target is on hull's value or on hull's ratio to runc.
 */
import type { BootResult } from './boot.js';
import type { ExecResult } from './exec.js';
import type { IdleResult } from './idle.js';
import type { StdioResult } from './stdio.js';
import { RUNTIMES, type RuntimeName } from './runtimes.js';
import { round, type Summary } from './stats.js';

export interface Results {
  p1CtrRunMs: Record<RuntimeName, Summary>;
  p2p5Idle: Record<RuntimeName, IdleResult>;
  p3BatchMs: Record<RuntimeName, Summary>;
  exec: ExecResult;
  boot: BootResult;
}

interface Target {
  /** on: what the target bounds; `ratio` is hull / runc. */
  on: 'hull' | 'ratio';
  op: '<=' | '>=';
  limit: number;
  text: string;
}

export interface Row {
  id: string;
  metric: string;
  values: Record<RuntimeName, number | null>;
  digits: number;
  ratio: number | null;
  target: Target | null;
  met: boolean | null;
}

function row(id: string, metric: string, values: Record<RuntimeName, number | null>, digits: number, target: Target | null): Row {
  const { runc, hull } = values;
  const ratio = runc && hull !== null ? round(hull / runc, 2) : null;
  const subject = target?.on === 'ratio' ? ratio : hull;
  const met = target && subject !== null ? (target.op === '<=' ? subject <= target.limit : subject >= target.limit) : null;
  return { id, metric, values, digits, ratio, target, met };
}

const medians = (s: Record<RuntimeName, Summary>): Record<RuntimeName, number> => ({ runc: s.runc.median, gvisor: s.gvisor.median, hull: s.hull.median });

export function tableRows(r: Results, o: { runs: number; pods: number; batch: number; repeats: number; cpuWindowS: number; writeMiB: number }): Row[] {
  const idle = (f: (x: IdleResult) => number): Record<RuntimeName, number> => ({ runc: f(r.p2p5Idle.runc), gvisor: f(r.p2p5Idle.gvisor), hull: f(r.p2p5Idle.hull) });
  return [
    row('P1', 'ctr run --rm IMAGE true, ms', medians(r.p1CtrRunMs), 0, { on: 'ratio', op: '<=', limit: 2, text: '≤ 2.0× runc' }),
    row('P2', `host memory per idle pod (PSS, ${o.pods} pods), MiB`, idle((x) => x.pssMiBPerPod), 1, { on: 'hull', op: '<=', limit: 40, text: '≤ 40 MiB' }),
    row('P3', `${o.batch} pods in parallel to Running, ms (×${o.repeats})`, medians(r.p3BatchMs), 0, { on: 'hull', op: '<=', limit: 3000, text: '≤ 3 s' }),
    row('P4', 'exec true, ms', medians(r.exec.execTrueMs), 0, { on: 'ratio', op: '<=', limit: 2, text: '≤ 2.0× runc' }),
    row('P5', `idle CPU per pod (${o.pods} pods, ${o.cpuWindowS} s), % of a core`, idle((x) => x.cpuPctPerPod), 3, { on: 'hull', op: '<=', limit: 0.5, text: '≤ 0.5 %' }),
    row('P6', `write ${o.writeMiB} MiB + fsync to rootfs, MiB/s (×${o.runs})`, medians(r.exec.writeMiBps), 0, { on: 'ratio', op: '>=', limit: 0.5, text: '≥ 0.5× runc' }),
    row('B1', '`run` a bundle, true, no containerd, ms', medians(r.boot.run), 0, null),
    row('B2', 'hull run, templates off (cold boot), ms', { runc: r.boot.run.runc.median, gvisor: null, hull: r.boot.hullCold.median }, 0, null),
  ];
}

export function stdioRows(r: StdioResult, mib: number, runs: number): Row[] {
  const target: Target = { on: 'ratio', op: '>=', limit: 0.5, text: '≥ 0.5× runc' };
  return [
    row('S1', `stdout of ctr run, ${mib} MiB, MiB/s (×${runs})`, medians(r.stdoutMiBps), 1, target),
    row('S2', `stdin of ctr run, ${mib} MiB, MiB/s (×${runs})`, medians(r.stdinMiBps), 1, target),
  ];
}

export function formatTable(rows: Row[]): string {
  const fmt = (v: number | null, digits: number): string => (v === null ? '-' : v.toFixed(digits));
  const header = ['metric', 'runc', 'gVisor', 'hull', 'hull/runc', 'target', 'met'];
  const cells = rows.map((r) => [
    `${r.id} ${r.metric}`,
    ...RUNTIMES.map((n) => fmt(r.values[n], r.digits)),
    r.ratio === null ? '-' : `${r.ratio.toFixed(2)}×`,
    r.target?.text ?? '-',
    r.met === null ? '-' : r.met ? 'met' : 'NOT MET',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  // Numbers right-aligned, text left-aligned; a Markdown table as printed.
  const numeric = (i: number): boolean => i >= 1 && i <= 4;
  const line = (c: string[]): string => `| ${c.map((v, i) => (numeric(i) ? v.padStart(widths[i]!) : v.padEnd(widths[i]!))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (numeric(i) ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`;
  return [line(header), rule, ...cells.map(line)].join('\n');
}
