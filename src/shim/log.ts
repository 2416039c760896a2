/**
 * hull's logs: one JSON object per line (`time`, `level`, `msg`, then fields such as `sandbox_id`
 * and the pod's `pod_namespace`/`pod_name`/`pod_uid`), the keys of logrus's JSON formatter, so
 * what containerd copies from the shim reads as containerd's own JSON lines do. The shim daemon's
 * lines go to `<bundle>/log`, a FIFO containerd opened and copies to its own log; if it cannot be
 * opened they go nowhere (the daemon has no stdout or stderr, by contract). `hull monitor` writes
 * the same lines to stderr.
 */
import { constants, openSync, writeSync, closeSync } from 'node:fs';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFields = Record<string, string | number | boolean | undefined>;

const SEVERITY: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };
// A line longer than this is cut: a log line must never be what exhausts a pipe or a journal.
const MAX_MESSAGE_CHARS = 32 * 1024;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** setLevel drops lines less severe than `level` from now on. */
  setLevel(level: LogLevel): void;
  /** setFields adds fields to every later line (the pod's labels once they are known). */
  setFields(fields: LogFields): void;
}

/** jsonLogLine is one log line, newline included; `fields` never override time, level or msg. */
export function jsonLogLine(level: LogLevel, msg: string, fields: LogFields, now = new Date()): string {
  const text = msg.length > MAX_MESSAGE_CHARS ? `${msg.slice(0, MAX_MESSAGE_CHARS)}… (${msg.length} characters)` : msg;
  const extra = Object.fromEntries(Object.entries(fields).filter(([k, v]) => v !== undefined && v !== '' && k !== 'time' && k !== 'level' && k !== 'msg'));
  return JSON.stringify({ time: now.toISOString(), level, msg: text, ...extra }) + '\n';
}

/** createLogger writes JSON lines at or above `level` through `write`. */
export function createLogger(write: (line: string) => void, fields: LogFields = {}, level: LogLevel = 'info'): Logger {
  let min = SEVERITY[level];
  let common = { ...fields };
  const at = (l: LogLevel) => (msg: string, more?: LogFields) => {
    if (SEVERITY[l] >= min) write(jsonLogLine(l, msg, more ? { ...common, ...more } : common));
  };
  return {
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    setLevel: (l) => void (min = SEVERITY[l]),
    setFields: (f) => void (common = { ...common, ...f }),
  };
}

/**
 * openShimLog opens the shim's log FIFO. `log` is the plain string logger the rest of the shim is
 * given (info level); `logger` is the same stream with levels and fields.
 */
export function openShimLog(path: string, id: string): { log: (line: string) => void; logger: Logger; close: () => void } {
  let fd: number | undefined;
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
  } catch {
    fd = undefined;
  }
  const logger = createLogger(
    (line) => {
      if (fd === undefined) return;
      try {
        writeSync(fd, line);
      } catch {
        // containerd stopped reading: dropping log lines is better than blocking the shim
      }
    },
    { runtime: 'io.containerd.hull.v2', sandbox_id: id },
  );
  return {
    log: (line: string) => logger.info(line),
    logger,
    close() {
      if (fd !== undefined) closeSync(fd);
      fd = undefined;
    },
  };
}
