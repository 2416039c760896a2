/**
 * The long-lived shim process of one pod: serves the Task API over ttrpc on
 * the pod's socket and publishes events. Started by `start`, which waits for
 * the "ready" line on fd 3 before telling containerd the address.
 */
import { writeSync, closeSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { loadConfig } from '../config/index.js';
import { Task } from '../proto/gen/task_pb.js';
import { serviceHandlers } from '../proto/rpc.js';
import { TtrpcServer, type ServiceMethods } from '../ttrpc/index.js';
import { EventPublisher } from './events.js';
import type { ShimFlags } from './flags.js';
import { openShimLog } from './log.js';
import { TaskService } from './task-service.js';

const READY_FD = 3;

function tellStarter(message: string): void {
  try {
    writeSync(READY_FD, message + '\n');
    closeSync(READY_FD);
  } catch {
    // started by hand, without the pipe
  }
}

export async function serveDaemon(flags: ShimFlags): Promise<void> {
  const { log, logger, close: closeLog } = openShimLog(join(flags.bundle || process.cwd(), 'log'), flags.id);
  process.chdir('/');
  // The daemon has no stderr: a crash must at least reach containerd's log.
  process.on('uncaughtException', (e) => {
    logger.error(`fatal: ${e.stack ?? e.message}`);
    process.exit(1);
  });
  process.on('unhandledRejection', (e) => logger.error(`unhandled rejection: ${(e as Error)?.stack ?? String(e)}`));
  let server: TtrpcServer | undefined;
  try {
    const config = await loadConfig(process.env['HULL_CONFIG'] || undefined);
    logger.setLevel(config.logLevel);
    const events = new EventPublisher(process.env['TTRPC_ADDRESS'] ?? `${flags.address}.ttrpc`, flags.namespace, log);
    let stopping = false;
    const stop = async (): Promise<void> => {
      if (stopping) return;
      stopping = true;
      await tasks.destroyAll();
      await events.flush();
      events.close();
      await server?.close();
      await rm(flags.socket, { force: true });
      closeLog();
      process.exit(0);
    };
    const tasks: TaskService = new TaskService({ config, events, log, logger, onIdle: () => void stop() });
    server = new TtrpcServer({ onError: (e) => log(`ttrpc: ${e.message}`) });
    const handlers = serviceHandlers(Task, tasks);
    server.register(Task.typeName, flags.debug || process.env['HULL_SHIM_TRACE'] ? traced(handlers, log) : handlers);
    await server.listen(flags.socket);
    for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => void stop());
    log(`serving on ${flags.socket}`);
    tellStarter('ready');
  } catch (e) {
    tellStarter(`error: ${(e as Error).message}`);
    await server?.close();
    closeLog();
    process.exit(1);
  }
}

/** traced logs every Task call and its outcome (with -debug, or HULL_SHIM_TRACE set). */
function traced(handlers: ServiceMethods, log: (line: string) => void): ServiceMethods {
  const out: Record<string, ServiceMethods[string]> = {};
  for (const [name, handler] of Object.entries(handlers)) {
    out[name] = async (payload, ctx) => {
      const started = Date.now();
      try {
        const result = await handler(payload, ctx);
        log(`${name} ok (${Date.now() - started} ms)`);
        return result;
      } catch (e) {
        log(`${name} failed (${Date.now() - started} ms): ${(e as Error).message}`);
        throw e;
      }
    };
  }
  return out;
}
