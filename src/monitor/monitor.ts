/**
 * Monitor: `hull monitor`, the node's metrics endpoint for hull sandboxes (kata-monitor's role).
 * Each GET /metrics asks every live shim at once, on its read-only status socket in status_dir, for
 * its sandbox's status (shims.ts), checks it
 * (status-check.ts) and answers one Prometheus text exposition (exposition.ts) with the monitor's
 * own scrape count, failures and duration. Requests that arrive while a scrape of the shims runs
 * share it. A shim that does not answer within `shimTimeoutMs` counts as a failure
 * (`hull_monitor_shim_up` 0) and delays the scrape by at most that. Given a token, every request
 * must carry it (auth.ts); without one it serves on loopback only.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Logger } from '../shim/log.js';
import { bearerCheck, checkListen } from './auth.js';
import { sandboxRegistry } from './exposition.js';
import { listStatusSockets, readAll, SHIM_LIMITS, type ShimAnswer } from './shims.js';

export interface MonitorOptions {
  /** statusDir: where the shims serve their status sockets (config status_dir). */
  statusDir: string;
  logger: Logger;
  shimTimeoutMs?: number;
  /** token: the bearer token every request must carry (auth.ts); none: loopback only. */
  token?: string;
  /** nodeMemory, when given, is read on every scrape: what hull holds outside the pods (hull_template_store_allocated_bytes, hull_pool_memory_bytes). */
  nodeMemory?: () => Promise<{ templateAllocatedBytes: number | null; poolMemoryBytes: number | null }>;
}

export class Monitor {
  readonly #options: MonitorOptions;
  readonly #authorized: (req: IncomingMessage) => boolean;
  readonly #own = new Registry();
  readonly #scrapes = new Counter({ name: 'hull_monitor_scrapes_total', help: 'Scrapes of the shims this monitor made', registers: [this.#own] });
  readonly #failures = new Counter({ name: 'hull_monitor_shim_failures_total', help: 'Shim answers that were missing, late, too large or invalid', registers: [this.#own] });
  readonly #duration = new Histogram({
    name: 'hull_monitor_scrape_duration_seconds',
    help: 'Time to ask every shim and check their answers',
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.#own],
  });
  readonly #sandboxes = new Gauge({ name: 'hull_monitor_sandboxes', help: 'Sandbox directories found in the run root at the last scrape', registers: [this.#own] });
  readonly #templateBytes = new Gauge({ name: 'hull_template_store_allocated_bytes', help: 'Bytes the VM template RAM files hold allocated (st_blocks), all together', registers: [this.#own] });
  readonly #poolBytes = new Gauge({ name: 'hull_pool_memory_bytes', help: "Memory the VM pool's cgroup is charged (ready VMs, its owner)", registers: [this.#own] });
  // The scrape of the shims under way; requests meanwhile share it.
  #inFlight: Promise<string> | undefined;

  constructor(options: MonitorOptions) {
    this.#options = options;
    const check = options.token === undefined ? undefined : bearerCheck(options.token);
    this.#authorized = check ? (req) => check(req.headers.authorization) : () => true;
  }

  /** metrics scrapes the shims (or joins the scrape under way) and returns the text exposition. */
  metrics(): Promise<string> {
    this.#inFlight ??= this.#scrape().finally(() => (this.#inFlight = undefined));
    return this.#inFlight;
  }

  get contentType(): string {
    return this.#own.contentType;
  }

  async #scrape(): Promise<string> {
    const started = performance.now();
    const answers = await readAll(await listStatusSockets(this.#options.statusDir), true, { timeoutMs: this.#options.shimTimeoutMs ?? SHIM_LIMITS.timeoutMs });
    const statuses = answers.flatMap((a) => ('status' in a ? [a.status] : []));
    const failed = answers.filter((a): a is Extract<ShimAnswer, { error: string }> => 'error' in a);
    for (const f of failed) this.#options.logger.warn(`no status from the shim of sandbox ${f.id}: ${f.error}`, { sandbox_id: f.id });
    const perScrape = sandboxRegistry(statuses);
    const up = new Gauge({ name: 'hull_monitor_shim_up', help: '1 when the sandbox shim answered this scrape with a valid status, else 0', labelNames: ['sandbox_id'], registers: [perScrape] });
    for (const a of answers) up.set({ sandbox_id: a.id }, 'status' in a ? 1 : 0);
    this.#scrapes.inc();
    this.#failures.inc(failed.length);
    this.#sandboxes.set(answers.length);
    const node = await this.#options.nodeMemory?.().catch(() => undefined);
    if (node) {
      if (node.templateAllocatedBytes !== null) this.#templateBytes.set(node.templateAllocatedBytes);
      if (node.poolMemoryBytes !== null) this.#poolBytes.set(node.poolMemoryBytes);
    }
    this.#duration.observe((performance.now() - started) / 1000);
    return Registry.merge([this.#own, perScrape]).metrics();
  }

  /** listen serves GET /metrics on host:port until close(); beyond loopback only with a token. */
  async listen(host: string, port: number): Promise<MonitorServer> {
    checkListen(host, this.#options.token !== undefined);
    const server: Server = createServer((req, res) => {
      // Nothing of a scrape (no pod label) before the token is checked.
      if (!this.#authorized(req)) {
        res.writeHead(401, { 'content-type': 'text/plain', 'www-authenticate': 'Bearer realm="hull-monitor"' }).end('unauthorized\n');
        return;
      }
      const path = (req.url ?? '').split('?')[0];
      if (req.method !== 'GET' || path !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('GET /metrics\n');
        return;
      }
      this.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.contentType }).end(text),
        (e: Error) => {
          this.#options.logger.error(`scrape failed: ${e.message}`);
          res.writeHead(500, { 'content-type': 'text/plain' }).end(`scrape failed: ${e.message}\n`);
        },
      );
    });
    // A client that never sends its request does not hold a connection for long.
    server.requestTimeout = 30_000;
    server.headersTimeout = 10_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address() as AddressInfo;
    this.#options.logger.info(`serving /metrics on ${address.address}:${address.port}`, { status_dir: this.#options.statusDir, auth: this.#options.token === undefined ? 'none' : 'bearer' });
    return {
      port: address.port,
      close: () => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))),
    };
  }
}

export interface MonitorServer {
  port: number;
  close(): Promise<void>;
}
