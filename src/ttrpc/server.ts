/**
 * server — TtrpcServer: serves registered ttrpc services on any number of connections.
 *
 * The shim serves containerd's Task API with it and the guest agent serves the agent API. Connections
 * are any node Duplex (a unix socket, a virtio-serial port), handed in with serve(), or accepted from a
 * unix socket with listen(). Each request runs concurrently (containerd keeps a Wait open for a task's
 * lifetime while other calls continue on the same connection).
 */

import { chmod } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { HullError } from '../errors/index.js';
import { ServerConnection, type ConnectionHost, type UnaryMethod } from './server-connection.js';

export type { CallContext, UnaryMethod } from './server-connection.js';

/** ServiceMethods maps each RPC name of a service (e.g. "Create") to its handler. */
export type ServiceMethods = Readonly<Record<string, UnaryMethod>>;

/** DEFAULT_MAX_IN_FLIGHT bounds the requests one connection may have running, unless the server says otherwise. */
export const DEFAULT_MAX_IN_FLIGHT = 4096;

export interface TtrpcServerOptions {
  /** closeTimeoutMs is how long close() waits for running requests before dropping connections (5000). */
  closeTimeoutMs?: number;
  /** maxInFlightPerConnection bounds concurrent requests on one connection; more get RESOURCE_EXHAUSTED (DEFAULT_MAX_IN_FLIGHT). */
  maxInFlightPerConnection?: number;
  /** onError hears about connection-level failures (stream errors, peers that stop reading); ignored by default. */
  onError?: (error: Error) => void;
}

export class TtrpcServer {
  /** services by fully-qualified name, e.g. "containerd.task.v2.Task". */
  private readonly services = new Map<string, ServiceMethods>();
  private readonly connections = new Set<ServerConnection>();
  private readonly listeners = new Set<Server>();
  private readonly closeTimeoutMs: number;
  private readonly host: ConnectionHost;
  private closePromise: Promise<void> | undefined;

  constructor(options: TtrpcServerOptions = {}) {
    this.closeTimeoutMs = options.closeTimeoutMs ?? 5000;
    const isClosing = (): boolean => this.closePromise !== undefined;
    this.host = {
      resolve: (service, method) => this.resolve(service, method),
      get closing() {
        return isClosing();
      },
      maxInFlight: options.maxInFlightPerConnection ?? DEFAULT_MAX_IN_FLIGHT,
      reportError: options.onError ?? (() => {}),
      connectionClosed: (connection) => this.connections.delete(connection),
    };
  }

  /** register adds a service under its fully-qualified name; registering a name twice is an error. */
  register(serviceName: string, methods: ServiceMethods): void {
    if (this.services.has(serviceName)) {
      throw new HullError('already_exists', `ttrpc: service "${serviceName}" is already registered`);
    }
    this.services.set(serviceName, { ...methods });
  }

  /** serve takes ownership of a connection: the server reads it, answers on it, and destroys it at close(). */
  serve(stream: Duplex): void {
    if (this.closePromise !== undefined) {
      stream.destroy();
      return;
    }
    const connection = new ServerConnection(stream, this.host);
    this.connections.add(connection);
    if (stream.destroyed) connection.destroy();
  }

  /**
   * listen accepts connections on a unix socket at `path` (which must not exist) and makes it mode 0600.
   * Between bind and chmod the socket has the umask's mode: keep it in a 0700 directory.
   */
  async listen(path: string): Promise<void> {
    if (this.closePromise !== undefined) throw new HullError('unavailable', 'ttrpc: server closed');
    const listener = createServer((socket: Socket) => this.serve(socket));
    await new Promise<void>((resolve, reject) => {
      const fail = (error: NodeJS.ErrnoException) => {
        const code = error.code === 'EADDRINUSE' ? 'already_exists' : 'internal';
        reject(new HullError(code, `ttrpc: cannot listen on "${path}": ${error.message}`, { cause: error }));
      };
      listener.once('error', fail);
      listener.listen(path, () => {
        listener.off('error', fail);
        resolve();
      });
    });
    listener.on('error', (error: Error) => this.host.reportError(error));
    this.listeners.add(listener);
    if (!path.startsWith('\0')) {
      try {
        await chmod(path, 0o600);
      } catch (error) {
        this.listeners.delete(listener);
        await closeListener(listener);
        throw new HullError('internal', `ttrpc: cannot chmod socket "${path}"`, { cause: error });
      }
    }
  }

  /**
   * close stops accepting connections and requests (new requests get UNAVAILABLE), waits up to
   * closeTimeoutMs for running requests to be answered, then destroys every connection. Idempotent.
   * A handler must not await close(): it would wait for itself until the timeout.
   */
  close(): Promise<void> {
    this.closePromise ??= this.closeGracefully();
    return this.closePromise;
  }

  private async closeGracefully(): Promise<void> {
    // net.Server.close() reports only once its connections are gone, so start it and await it last.
    const listenersClosed = [...this.listeners].map(closeListener);
    this.listeners.clear();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<void>((resolve) => (timer = setTimeout(resolve, this.closeTimeoutMs)));
    await Promise.race([Promise.all([...this.connections].map((connection) => connection.idle())), timedOut]);
    clearTimeout(timer);
    for (const connection of this.connections) connection.destroy();
    await Promise.all(listenersClosed);
  }

  private resolve(service: string, method: string): UnaryMethod | HullError {
    const methods = this.services.get(service);
    if (methods === undefined) return new HullError('unimplemented', `service ${service}`);
    const handler = Object.hasOwn(methods, method) ? methods[method] : undefined;
    if (handler === undefined) return new HullError('unimplemented', `method ${method}`);
    return handler;
  }
}

/** closeListener closes a net.Server; it resolves even if the server was not running. */
function closeListener(listener: Server): Promise<void> {
  return new Promise((resolve) => listener.close(() => resolve()));
}
