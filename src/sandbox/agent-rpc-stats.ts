/**
 * AgentRpcStats: how long the host's agent calls take, per method, as a histogram (for `hull
 * monitor`). Calls that block by design (WaitProcess, ReadOutput wait for the guest's processes)
 * are not timed: their latency says nothing about the agent.
 */
/** AGENT_RPC_BUCKETS are the histogram's upper bounds, in seconds (TCG makes the slow end common). */
export const AGENT_RPC_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30] as const;
const UNTIMED = new Set(['waitProcess', 'readOutput']);

/** AgentRpcHistogram is one method's: `counts[i]` calls took at most AGENT_RPC_BUCKETS[i] (cumulative). */
export interface AgentRpcHistogram {
  method: string;
  counts: number[];
  count: number;
  sumSeconds: number;
  errors: number;
}

export class AgentRpcStats {
  // method -> its histogram; changed only by observe().
  readonly #methods = new Map<string, { buckets: number[]; count: number; sum: number; errors: number }>();

  observe(method: string, seconds: number, ok: boolean): void {
    let m = this.#methods.get(method);
    if (!m) this.#methods.set(method, (m = { buckets: AGENT_RPC_BUCKETS.map(() => 0), count: 0, sum: 0, errors: 0 }));
    const i = AGENT_RPC_BUCKETS.findIndex((le) => seconds <= le);
    if (i >= 0) m.buckets[i]!++;
    m.count++;
    m.sum += seconds;
    if (!ok) m.errors++;
  }

  snapshot(): AgentRpcHistogram[] {
    return [...this.#methods].map(([method, m]) => {
      let total = 0;
      return { method, counts: m.buckets.map((n) => (total += n)), count: m.count, sumSeconds: m.sum, errors: m.errors };
    });
  }
}

/** timedAgent returns the agent client `agent` with each call (but the blocking ones) observed by `stats`. */
export function timedAgent<Client extends object>(agent: Client, stats: AgentRpcStats): Client {
  const out: Record<string, unknown> = {};
  for (const [name, call] of Object.entries(agent) as Array<[string, (...args: unknown[]) => Promise<unknown>]>) {
    out[name] = UNTIMED.has(name)
      ? call
      : async (...args: unknown[]) => {
          const started = performance.now();
          let ok = false;
          try {
            const result = await call(...args);
            ok = true;
            return result;
          } finally {
            stats.observe(name, (performance.now() - started) / 1000, ok);
          }
        };
  }
  return out as Client;
}
