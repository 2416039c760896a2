/**
 * hull-agent entry point, run by the guest's init (and restarted by it if it
 * dies). Serves the agent API over ttrpc on the `hull.agent` port. When the
 * host side disconnects the port reads EOF; the agent then reopens it, backing
 * off while nobody is connected (a virtio port with no host peer reads EOF at
 * once, so a blind loop would spin).
 */
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { TtrpcServer } from '../ttrpc/index.js';
import { Agent } from '../proto/gen/agent_pb.js';
import { serviceHandlers } from '../proto/rpc.js';
import { findPortDevice, openPort } from './channel.js';
import { AgentService } from './service.js';

// process.binding() is deprecated but is the only way to poll a char device; keep its warning off the console.
process.removeAllListeners('warning');

const server = new TtrpcServer({ onError: (e) => console.error(`hull-agent: ${e.message}`) });
server.register(Agent.typeName, serviceHandlers(Agent, new AgentService()));

async function serveHost(): Promise<never> {
  const device = findPortDevice();
  // One line per agent start on the console: when it came up in guest time.
  console.log(`hull-agent: serving on ${device} at uptime ${readFileSync('/proc/uptime', 'utf8').split(' ')[0]} s`);
  let backoffMs = 10;
  for (;;) {
    const socket = openPort(device);
    const startedAt = Date.now();
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.once('end', () => socket.destroy());
    server.serve(socket);
    await closed;
    // A connection that lived is a real disconnect: reconnect fast next time.
    backoffMs = Date.now() - startedAt > 1000 ? 10 : Math.min(backoffMs * 2, 1000);
    await sleep(backoffMs);
  }
}

serveHost().catch((e: unknown) => {
  console.error(`hull-agent: ${(e as Error).message}`);
  process.exit(1);
});
