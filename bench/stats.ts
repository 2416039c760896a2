/** Shared by the benchmark modules: summaries of samples, rounding, sleeping, bounded parallelism. */

export interface Summary {
  median: number;
  min: number;
  max: number;
  samples: number[];
}

export function median(samples: number[]): number {
  if (samples.length === 0) throw new Error('Cannot take the median of no samples');
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function round(v: number, digits = 1): number {
  return Math.round(v * 10 ** digits) / 10 ** digits;
}

/** summarize keeps every sample (rounded) with the median, min and max. */
export function summarize(samples: number[], digits = 1): Summary {
  return {
    median: round(median(samples), digits),
    min: round(Math.min(...samples), digits),
    max: round(Math.max(...samples), digits),
    samples: samples.map((v) => round(v, digits)),
  };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** inParallel runs `fn` over `items` with at most `limit` calls in flight; results keep the items' order. */
export async function inParallel<T, R>(items: T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** positiveInt reads a positive integer from the environment, or `fallback` when unset. */
export function positiveInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, not "${raw}"`);
  return n;
}
