/**
 * A strict parser of Prometheus's text exposition format (0.0.4), for tests: it refuses what a
 * Prometheus server would refuse (malformed names, labels, escapes or values; a TYPE after its
 * samples or given twice; a family's samples split up; a series given twice) and checks
 * histograms (le buckets cumulative, +Inf equal to _count, _sum and _count present).
 */
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface PromFamily {
  name: string;
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  help: string;
  samples: PromSample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

export function parsePromText(text: string): Map<string, PromFamily> {
  const families = new Map<string, PromFamily>();
  const series = new Set<string>();
  const closed = new Set<string>();
  let current: string | undefined;
  const lines = text.split('\n');
  if (lines.at(-1) !== '') throw new Error('exposition does not end with a newline');
  lines.forEach((line, index) => {
    const where = `line ${index + 1}`;
    if (line === '') return;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!m) return; // other comments are allowed
      const [, kind, name, rest] = m as unknown as [string, string, string, string];
      if (!METRIC_NAME.test(name)) throw new Error(`${where}: bad metric name "${name}"`);
      const family = family_(name, where);
      if (kind === 'TYPE') {
        if (!TYPES.has(rest)) throw new Error(`${where}: bad type "${rest}"`);
        if (family.samples.length > 0) throw new Error(`${where}: TYPE of ${name} after its samples`);
        if (family.typeSeen) throw new Error(`${where}: second TYPE for ${name}`);
        family.type = rest as PromFamily['type'];
        family.typeSeen = true;
      } else {
        if (family.helpSeen) throw new Error(`${where}: second HELP for ${name}`);
        family.help = unescape(rest, false, where);
        family.helpSeen = true;
      }
      return;
    }
    const sample = parseSample(line, where);
    const familyName = familyOf(sample.name, families);
    const family = family_(familyName, where);
    family.samples.push(sample);
    const key = `${sample.name}${JSON.stringify(Object.entries(sample.labels).sort())}`;
    if (series.has(key)) throw new Error(`${where}: series given twice: ${key}`);
    series.add(key);
  });
  for (const f of families.values()) if (f.type === 'histogram') checkHistogram(f);
  return new Map([...families].map(([k, f]) => [k, { name: f.name, type: f.type, help: f.help, samples: f.samples }]));

  function family_(name: string, where: string): PromFamily & { typeSeen?: boolean; helpSeen?: boolean } {
    if (current !== name) {
      if (closed.has(name)) throw new Error(`${where}: samples of ${name} are not together`);
      if (current !== undefined) closed.add(current);
      current = name;
    }
    let f = families.get(name) as (PromFamily & { typeSeen?: boolean; helpSeen?: boolean }) | undefined;
    if (!f) families.set(name, (f = { name, type: 'untyped', help: '', samples: [] }));
    return f;
  }
}

// familyOf maps a histogram's or summary's _bucket/_sum/_count sample to its family.
function familyOf(name: string, families: Map<string, PromFamily>): string {
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!name.endsWith(suffix)) continue;
    const base = name.slice(0, -suffix.length);
    const type = families.get(base)?.type;
    if (type === 'histogram' || (type === 'summary' && suffix !== '_bucket')) return base;
  }
  return name;
}

function parseSample(line: string, where: string): PromSample {
  const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)( -?\d+)?$/.exec(line);
  if (!m) throw new Error(`${where}: malformed sample "${line.slice(0, 120)}"`);
  const labels: Record<string, string> = {};
  if (m[2]) {
    let rest = m[2].slice(1, -1);
    while (rest.length > 0) {
      const l = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,?)/.exec(rest);
      if (!l || !LABEL_NAME.test(l[1]!)) throw new Error(`${where}: malformed labels "${m[2].slice(0, 120)}"`);
      if (l[1]! in labels) throw new Error(`${where}: label ${l[1]} given twice`);
      labels[l[1]!] = unescape(l[2]!, true, where);
      rest = rest.slice(l[0].length);
      if (!l[3] && rest.length > 0) throw new Error(`${where}: malformed labels "${m[2].slice(0, 120)}"`);
    }
  }
  return { name: m[1]!, labels, value: parseValue(m[3]!, where) };
}

function parseValue(s: string, where: string): number {
  if (s === '+Inf' || s === 'Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  if (s === 'NaN' || s === 'Nan') return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) throw new Error(`${where}: bad value "${s}"`);
  return Number(s);
}

function unescape(s: string, quoted: boolean, where: string): string {
  return s.replace(/\\(.)/g, (_, c: string) => {
    if (c === '\\') return '\\';
    if (c === 'n') return '\n';
    if (c === '"' && quoted) return '"';
    throw new Error(`${where}: bad escape "\\${c}"`);
  });
}

function checkHistogram(f: PromFamily): void {
  const groups = new Map<string, { buckets: Array<[number, number]>; sum?: number; count?: number }>();
  for (const s of f.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { buckets: [] }));
    if (s.name === `${f.name}_bucket`) {
      if (le === undefined) throw new Error(`${f.name}: bucket without le`);
      g.buckets.push([parseValue(le, f.name), s.value]);
    } else if (s.name === `${f.name}_sum`) g.sum = s.value;
    else if (s.name === `${f.name}_count`) g.count = s.value;
    else throw new Error(`${f.name}: unexpected sample ${s.name}`);
  }
  for (const [key, g] of groups) {
    if (g.sum === undefined || g.count === undefined) throw new Error(`${f.name}${key}: no _sum or _count`);
    g.buckets.sort((a, b) => a[0] - b[0]);
    if (g.buckets.at(-1)?.[0] !== Infinity || g.buckets.at(-1)?.[1] !== g.count) throw new Error(`${f.name}${key}: +Inf bucket is not _count`);
    for (let i = 1; i < g.buckets.length; i++) if (g.buckets[i]![1] < g.buckets[i - 1]![1]) throw new Error(`${f.name}${key}: buckets are not cumulative`);
  }
}
