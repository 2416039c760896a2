/**
 * The host's client of hull-agent, with every answer checked before the rest
 * of the host trusts it: the guest is hostile, so a number out of range, an
 * oversized list or a string too long is an error, not a value.
 */
import { connectUnix } from '../common/unix-socket.js';
import { HullError, peerText } from '../errors/index.js';
import { TtrpcClient } from '../ttrpc/index.js';
import { Agent } from '../proto/gen/agent_pb.js';
import { serviceClient, type ServiceClient } from '../proto/rpc.js';
import { timedAgent, type AgentRpcStats } from './agent-rpc-stats.js';

export type AgentClient = ServiceClient<(typeof Agent)['method']>;

/** Default deadline of an agent call that is not meant to block. */
export const AGENT_CALL_TIMEOUT_MS = 30_000;

export const LIMITS = {
  maxProcesses: 65_536,
  maxString: 4096,
} as const;

/**
 * checkString refuses a guest string longer than LIMITS.maxString and returns it with its control
 * characters replaced (errors/peer-text.ts): guest strings end up in logs, errors and containerd's answers.
 * (Error statuses from the agent are cleaned the same way by the ttrpc client.)
 */
export function checkString(what: string, value: string): string {
  if (value.length > LIMITS.maxString) throw new HullError('internal', `Guest sent a ${what} of ${value.length} characters`);
  // Up to 4 UTF-8 bytes a character: nothing under the limit is cut.
  return peerText(value, 4 * LIMITS.maxString);
}

/** connectAgent connects to the agent's socket (QEMU's end of the virtio-serial port); `stats` times its calls. */
export async function connectAgent(socketPath: string, stats?: AgentRpcStats): Promise<{ client: TtrpcClient; agent: AgentClient }> {
  const client = new TtrpcClient(await connectUnix(socketPath, 'agent socket'));
  const agent = serviceClient(Agent, client);
  return { client, agent: stats ? timedAgent(agent, stats) : agent };
}

/**
 * waitForAgent answers once the agent responds to Check after the guest
 * opened its port (`portOpened`), or fails at `deadline` or when `abandoned`
 * settles (the VM died). Bytes sent before the port is open wait inside QEMU,
 * so nothing is sent before it. Check is sent again while unanswered: a clone's
 * agent reopens its port when it notices its template's host is gone, and the
 * request in flight is lost with the old port (see resendUnanswered).
 */
export async function waitForAgent(agent: AgentClient, deadline: number, portOpened: Promise<void>, abandoned: Promise<unknown>): Promise<AgentIdentity> {
  const died = abandoned.then(() => {
    throw new HullError('unavailable', 'VM exited before its agent answered');
  });
  const timedOut = new Promise<never>((_, reject) => {
    const timer = setTimeout(() => reject(new HullError('deadline_exceeded', 'Guest agent did not answer in time')), Math.max(0, deadline - Date.now()));
    void abandoned.finally(() => clearTimeout(timer));
    void portOpened.then(() => clearTimeout(timer));
  });
  await Promise.race([portOpened, died, timedOut]);
  return Promise.race([resendUnanswered((timeoutMs) => checkAgent(agent, timeoutMs), deadline, () => {}, CHECK_ATTEMPT_MS), died]);
}

/** AgentIdentity is what Check says of the agent: its version and the instance of its process. */
export interface AgentIdentity {
  version: string;
  /** instance (hex) changes when the guest's init starts another agent. */
  instance: string;
}

/** MAX_INSTANCE_BYTES bounds the agent's instance id. */
const MAX_INSTANCE_BYTES = 64;

function agentIdentity(r: { agentVersion: string; instance: Uint8Array }): AgentIdentity {
  if (r.instance.length === 0 || r.instance.length > MAX_INSTANCE_BYTES) throw new HullError('internal', `Guest sent an agent instance of ${r.instance.length} bytes`);
  return { version: checkString('agent version', r.agentVersion), instance: Buffer.from(r.instance).toString('hex') };
}

/** checkAgent asks the agent who it is (Check), within `timeoutMs`. */
export async function checkAgent(agent: AgentClient, timeoutMs: number): Promise<AgentIdentity> {
  return agentIdentity(await agent.check({}, { timeoutMs }));
}

/** CHECK_ATTEMPT_MS: one Check's wait before it is sent again. */
const CHECK_ATTEMPT_MS = 500;

/**
 * waitForAdoptedAgent answers once the agent of a VM taken over from another process (a pooled
 * VM) responds to Check, or fails at `deadline`. That agent saw the other process hang up and
 * reopens its port, which drops what the host sent meanwhile: Check is sent again until answered.
 */
export function waitForAdoptedAgent(agent: AgentClient, deadline: number): Promise<AgentIdentity> {
  return resendUnanswered((timeoutMs) => checkAgent(agent, timeoutMs), deadline, () => {}, CHECK_ATTEMPT_MS);
}

/** SETUP_ATTEMPT_MS: one attempt of an idempotent setup call before it is sent again. */
const SETUP_ATTEMPT_MS = 2_500;

/**
 * resendUnanswered runs `call` (idempotent; given its timeout) until it answers or `deadline` passes,
 * each attempt bounded by `attemptMs`. The agent of a clone or of an adopted VM may notice its
 * previous host's hang-up only after its first answer (the guest handles the port's control
 * messages late under load): it then reopens its port, and the request in flight, or its answer,
 * is lost with the old one.
 */
export async function resendUnanswered<T>(call: (timeoutMs: number) => Promise<T>, deadline: number, onResend: (e: Error) => void = () => {}, attemptMs = SETUP_ATTEMPT_MS): Promise<T> {
  for (;;) {
    try {
      return await call(Math.max(1, Math.min(attemptMs, deadline - Date.now())));
    } catch (e) {
      if (Date.now() >= deadline || (e as HullError).code !== 'deadline_exceeded') throw e;
      onResend(e as Error);
    }
  }
}

/** AgentDebugState is what the agent says it holds (DebugState), checked. */
export interface AgentDebugState {
  rssBytes: number;
  heapUsedBytes: number;
  heapTotalBytes: number;
  externalBytes: number;
  containers: Array<{ containerId: string; execs: number; bundleFiles: number }>;
  /** consoles: console processes the agent keeps (`hull console`). */
  consoles: number;
}

/** readDebugState asks the agent what it holds, after a full garbage collection in the guest. */
export async function readDebugState(agent: AgentClient, timeoutMs = AGENT_CALL_TIMEOUT_MS): Promise<AgentDebugState> {
  const r = await agent.debugState({ collectGarbage: true }, { timeoutMs });
  if (r.containers.length > LIMITS.maxProcesses) throw new HullError('internal', `Guest listed ${r.containers.length} containers`);
  const bytes = (what: string, n: bigint): number => {
    if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new HullError('internal', `Guest sent an ${what} of ${n} bytes`);
    return Number(n);
  };
  return {
    rssBytes: bytes('RSS', r.rssBytes),
    heapUsedBytes: bytes('heap size', r.heapUsedBytes),
    heapTotalBytes: bytes('heap size', r.heapTotalBytes),
    externalBytes: bytes('external size', r.externalBytes),
    containers: r.containers.map((c) => ({ containerId: checkString('container id', c.containerId), execs: c.execs, bundleFiles: c.bundleFiles })),
    consoles: r.consoles,
  };
}
