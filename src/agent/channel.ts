/**
 * The agent's end of the host channel: the virtio-serial port named
 * `hull.agent`, found by name because its device index depends on probe
 * order. Node has no public API to put a character device on the event loop
 * (net.Socket refuses non-socket fds, fs streams would park a threadpool
 * thread in a blocking read), so the fd is opened as a libuv pipe handle,
 * which polls it like a socket: the virtio console driver supports poll.
 */
import { openSync, readdirSync, readFileSync, constants } from 'node:fs';
import { Socket } from 'node:net';
import { AGENT_PORT_NAME } from '../common/names.js';
import { HullError } from '../errors/index.js';

const PORTS_DIR = '/sys/class/virtio-ports';

export function findPortDevice(name: string = AGENT_PORT_NAME): string {
  for (const port of readdirSync(PORTS_DIR)) {
    const portName = readFileSync(`${PORTS_DIR}/${port}/name`, 'utf8').trim();
    if (portName === name) return `/dev/${port}`;
  }
  throw new HullError('not_found', `No virtio-serial port named "${name}" in ${PORTS_DIR}`);
}

interface PipeHandle {
  open(fd: number): number;
}
interface PipeWrapBinding {
  Pipe: new (type: number) => PipeHandle;
  constants: { SOCKET: number };
}

export function openPort(device: string): Socket {
  const fd = openSync(device, constants.O_RDWR | constants.O_NOCTTY);
  const binding = (process as unknown as { binding(name: string): PipeWrapBinding }).binding('pipe_wrap');
  const handle = new binding.Pipe(binding.constants.SOCKET);
  const status = handle.open(fd);
  if (status !== 0) throw new HullError('internal', `Cannot poll ${device}: libuv error ${status}`);
  return new Socket({ handle, readable: true, writable: true } as unknown as ConstructorParameters<typeof Socket>[0]);
}
