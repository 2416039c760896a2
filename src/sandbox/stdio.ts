/**
 * Carrying a guest process's stdio to host streams: output is pulled with
 * ReadOutput calls (each bounded by the size the host asked for) and written
 * with backpressure; stdin is pushed with WriteStdin in bounded chunks and
 * closed at its end.
 */
import type { Readable, Writable } from 'node:stream';
import { HullError } from '../errors/index.js';
import type { AgentClient } from './agent-client.js';
import { OutputStream } from '../proto/gen/agent_pb.js';

const READ_CHUNK = 256 * 1024;
const WRITE_CHUNK = 256 * 1024;

export interface HostStdio {
  stdin?: Readable;
  stdout?: Writable;
  stderr?: Writable;
}

/** pumpOutput copies one output stream of a guest process until its end. */
export async function pumpOutput(agent: AgentClient, containerId: string, execId: string, stream: OutputStream, sink: Writable, signal?: AbortSignal): Promise<void> {
  for (;;) {
    const { data, eof } = await agent.readOutput({ containerId, execId, stream, maxBytes: READ_CHUNK }, { signal });
    if (data.length > READ_CHUNK) throw new HullError('internal', `Guest sent ${data.length} bytes of output, more than the ${READ_CHUNK} asked for`);
    if (data.length > 0 && !sink.write(data)) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          sink.off('drain', done);
          sink.off('close', done);
          resolve();
        };
        sink.once('drain', done);
        sink.once('close', done);
      });
    }
    if (eof) return;
  }
}

/** pumpStdin sends `source` to the guest process's stdin and closes it at the end. */
export async function pumpStdin(agent: AgentClient, containerId: string, execId: string, source: Readable, signal?: AbortSignal): Promise<void> {
  try {
    for await (const chunk of source) {
      const bytes: Buffer = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      for (let offset = 0; offset < bytes.length; offset += WRITE_CHUNK) {
        await agent.writeStdin({ containerId, execId, data: bytes.subarray(offset, offset + WRITE_CHUNK) }, { signal });
      }
    }
  } finally {
    await agent.closeStdin({ containerId, execId }, { signal }).catch(() => {});
  }
}
