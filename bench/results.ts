/** Shared by the benchmarks: medians, and appending a run to a JSON results file. */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

export function median(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** appendResult adds `entry` to the JSON array in `file` (started again if it is not JSON). */
export function appendResult(file: string, entry: object): void {
  let all: unknown[] = [];
  if (existsSync(file)) {
    try {
      const old: unknown = JSON.parse(readFileSync(file, 'utf8'));
      all = Array.isArray(old) ? old : [old];
    } catch {
      console.error(`bench: ${file} was not JSON; starting it again`);
    }
  }
  all.push(entry);
  writeFileSync(file, JSON.stringify(all, null, 2) + '\n');
}
