/**
 * cri — a CRI v1 client for tests: what kubelet would ask containerd, without kubelet or crictl
 * (Debian 12 has neither). gRPC via @grpc/grpc-js over containerd's unix socket, messages from our
 * trimmed copy of the CRI api.proto (`cri/api.proto`, field numbers as upstream), plain objects with
 * camelCase fields, enums as strings ('CONTAINER_RUNNING'), int64 as number, bytes as Buffer.
 *
 * Every call has a deadline (default 60 s: VM pods boot slowly); failures become HullErrors whose
 * code follows the gRPC status (so `isInvalidArgument(e)` works) and whose message names the RPC.
 *
 * Streaming (`Exec`, `PortForward`) returns a URL on containerd's streaming server. containerd 1.6.20
 * serves it with SPDY/3.1 and with WebSocket subprotocols `channel.k8s.io`, `base64.channel.k8s.io`,
 * `v4.channel.k8s.io` and `v4.base64.channel.k8s.io` (no `v5.channel.k8s.io`, so a client cannot
 * half-close stdin: the process sees EOF only when the connection closes). `execStream` and
 * `portForwardOnce` speak `v4.channel.k8s.io`: each binary message starts with a channel byte.
 */
import { existsSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import WebSocket from 'ws';
import { HullError } from '../../src/errors/index.js';
import { fromStatusCode } from '../../src/errors/grpc-status.js';

export type StringMap = Record<string, string>;
export type NamespaceMode = 'POD' | 'CONTAINER' | 'NODE' | 'TARGET';
export type ContainerState = 'CONTAINER_CREATED' | 'CONTAINER_RUNNING' | 'CONTAINER_EXITED' | 'CONTAINER_UNKNOWN';
export type PodSandboxState = 'SANDBOX_READY' | 'SANDBOX_NOTREADY';

export interface LinuxContainerResources {
  cpuPeriod?: number;
  cpuQuota?: number;
  cpuShares?: number;
  memoryLimitInBytes?: number;
  oomScoreAdj?: number;
  cpusetCpus?: string;
  cpusetMems?: string;
  unified?: StringMap;
  memorySwapLimitInBytes?: number;
}

export interface Mount {
  containerPath: string;
  hostPath: string;
  readonly?: boolean;
  selinuxRelabel?: boolean;
  propagation?: 'PROPAGATION_PRIVATE' | 'PROPAGATION_HOST_TO_CONTAINER' | 'PROPAGATION_BIDIRECTIONAL';
}

export interface PodSandboxConfig {
  metadata: { name: string; uid: string; namespace: string; attempt?: number };
  hostname?: string;
  logDirectory?: string;
  dnsConfig?: { servers?: string[]; searches?: string[]; options?: string[] };
  portMappings?: { protocol?: 'TCP' | 'UDP' | 'SCTP'; containerPort: number; hostPort?: number; hostIp?: string }[];
  labels?: StringMap;
  annotations?: StringMap;
  linux?: {
    cgroupParent?: string;
    securityContext?: { namespaceOptions?: { network?: NamespaceMode; pid?: NamespaceMode; ipc?: NamespaceMode }; privileged?: boolean };
    sysctls?: StringMap;
    overhead?: LinuxContainerResources;
    resources?: LinuxContainerResources;
  };
}

export interface ContainerConfig {
  metadata: { name: string; attempt?: number };
  image: { image: string };
  command?: string[];
  args?: string[];
  workingDir?: string;
  envs?: { key: string; value: string }[];
  mounts?: Mount[];
  labels?: StringMap;
  annotations?: StringMap;
  logPath?: string;
  stdin?: boolean;
  stdinOnce?: boolean;
  tty?: boolean;
  linux?: {
    resources?: LinuxContainerResources;
    securityContext?: {
      privileged?: boolean;
      namespaceOptions?: { network?: NamespaceMode; pid?: NamespaceMode; ipc?: NamespaceMode };
      runAsUser?: { value: number };
      runAsGroup?: { value: number };
      supplementalGroups?: number[];
      noNewPrivs?: boolean;
      capabilities?: { addCapabilities?: string[]; dropCapabilities?: string[] };
    };
  };
}

export interface VersionResponse { version: string; runtimeName: string; runtimeVersion: string; runtimeApiVersion: string }
export interface RuntimeCondition { type: string; status: boolean; reason: string; message: string }
export interface StatusResponse { status: { conditions: RuntimeCondition[] } | null; info: StringMap }
export interface PodSandbox { id: string; metadata: PodSandboxConfig['metadata']; state: PodSandboxState; createdAt: number; labels: StringMap; annotations: StringMap; runtimeHandler: string }
export interface PodSandboxStatus extends PodSandbox { network: { ip: string; additionalIps: { ip: string }[] } | null; linux: unknown }
export interface PodSandboxStatusResponse { status: PodSandboxStatus; info: StringMap }
export interface Container { id: string; podSandboxId: string; metadata: { name: string; attempt: number }; image: { image: string }; imageRef: string; state: ContainerState; createdAt: number; labels: StringMap; annotations: StringMap }
export interface ContainerStatus {
  id: string; metadata: { name: string; attempt: number }; state: ContainerState; createdAt: number; startedAt: number; finishedAt: number;
  exitCode: number; image: { image: string }; imageRef: string; reason: string; message: string; labels: StringMap; annotations: StringMap;
  mounts: Mount[]; logPath: string; resources: { linux: LinuxContainerResources | null } | null;
}
export interface ContainerStatusResponse { status: ContainerStatus; info: StringMap }
export interface ExecSyncResponse { stdout: Buffer; stderr: Buffer; exitCode: number }
type UInt64Value = { value: number } | null;
export interface ContainerStats {
  attributes: { id: string; metadata: { name: string; attempt: number }; labels: StringMap; annotations: StringMap };
  cpu: { timestamp: number; usageCoreNanoSeconds: UInt64Value; usageNanoCores: UInt64Value } | null;
  memory: { timestamp: number; workingSetBytes: UInt64Value; availableBytes: UInt64Value; usageBytes: UInt64Value; rssBytes: UInt64Value; pageFaults: UInt64Value; majorPageFaults: UInt64Value } | null;
  writableLayer: unknown;
}
export interface Image { id: string; repoTags: string[]; repoDigests: string[]; size: number; uid: { value: number } | null; username: string }
export interface ContainerFilter { id?: string; state?: { state: ContainerState }; podSandboxId?: string; labelSelector?: StringMap }
export interface PodSandboxFilter { id?: string; state?: { state: PodSandboxState }; labelSelector?: StringMap }

export interface ConnectOptions {
  /** deadlineMs is the per-call deadline; default 60 s. */
  deadlineMs?: number;
  /** readyTimeoutMs bounds waiting for the socket and for CRI to finish initialising; default 20 s. */
  readyTimeoutMs?: number;
}

type Callback<T> = (err: grpc.ServiceError | null, res?: T) => void;
type Unary = (req: object, opts: grpc.CallOptions, cb: Callback<unknown>) => void;

let loaded: grpc.GrpcObject | undefined;

/** protoPath finds cri/api.proto from this file's place in the source tree or in dist/. */
function protoPath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const p of [join(here, 'cri/api.proto'), join(here, '../../../test/harness/cri/api.proto')]) if (existsSync(p)) return p;
  throw new Error(`Cannot find the CRI api.proto near "${here}"`);
}

function services(): { Runtime: grpc.ServiceClientConstructor; Image: grpc.ServiceClientConstructor } {
  loaded ??= grpc.loadPackageDefinition(protoLoader.loadSync(protoPath(), { keepCase: false, longs: Number, enums: String, bytes: Buffer, defaults: true, oneofs: true }));
  const v1 = (loaded['runtime'] as grpc.GrpcObject)['v1'] as grpc.GrpcObject;
  return { Runtime: v1['RuntimeService'] as grpc.ServiceClientConstructor, Image: v1['ImageService'] as grpc.ServiceClientConstructor };
}

/** CriClient calls containerd's CRI plugin. Create it with `CriClient.connect`, end it with `close()`. */
export class CriClient {
  private constructor(
    private readonly runtime: grpc.Client,
    private readonly images: grpc.Client,
    private readonly deadlineMs: number,
  ) {}

  /** connect dials `address` (a socket path or `unix://…`) and waits until CRI answers Version. */
  static async connect(address: string, opts: ConnectOptions = {}): Promise<CriClient> {
    const target = address.startsWith('unix:') ? address : `unix://${address}`;
    const { Runtime, Image } = services();
    const runtime = new Runtime(target, grpc.credentials.createInsecure());
    const images = new Image(target, grpc.credentials.createInsecure(), { channelOverride: runtime.getChannel() });
    const client = new CriClient(runtime, images, opts.deadlineMs ?? 60_000);
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 20_000);
    try {
      await new Promise<void>((resolve, reject) => runtime.waitForReady(deadline, (e) => (e ? reject(e) : resolve())));
      // CRI answers "server is not initialized yet" for a moment after containerd starts.
      for (;;) {
        try {
          await client.version();
          break;
        } catch (e) {
          if (Date.now() > deadline) throw e;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    } catch (e) {
      client.close();
      throw new Error(`Cannot connect to CRI at "${target}": ${(e as Error).message}`, { cause: e });
    }
    return client;
  }

  close(): void {
    this.images.close();
    this.runtime.close();
  }

  private call<T>(client: grpc.Client, method: string, req: object, deadlineMs = this.deadlineMs): Promise<T> {
    const fn = (client as unknown as Record<string, Unary>)[method[0]!.toLowerCase() + method.slice(1)];
    if (!fn) throw new Error(`Unknown CRI method "${method}"`);
    return new Promise((resolve, reject) => {
      fn.call(client, req, { deadline: Date.now() + deadlineMs }, (err, res) => {
        if (err) reject(new CriError(method, err));
        else resolve(res as T);
      });
    });
  }

  version(): Promise<VersionResponse> {
    return this.call(this.runtime, 'Version', { version: 'v1' });
  }

  status(verbose = false): Promise<StatusResponse> {
    return this.call(this.runtime, 'Status', { verbose });
  }

  /** runPodSandbox returns the sandbox id. `runtimeHandler` is the RuntimeClass handler ('' = default). */
  async runPodSandbox(config: PodSandboxConfig, runtimeHandler = ''): Promise<string> {
    return (await this.call<{ podSandboxId: string }>(this.runtime, 'RunPodSandbox', { config, runtimeHandler })).podSandboxId;
  }

  async stopPodSandbox(podSandboxId: string): Promise<void> {
    await this.call(this.runtime, 'StopPodSandbox', { podSandboxId });
  }

  async removePodSandbox(podSandboxId: string): Promise<void> {
    await this.call(this.runtime, 'RemovePodSandbox', { podSandboxId });
  }

  podSandboxStatus(podSandboxId: string, verbose = false): Promise<PodSandboxStatusResponse> {
    return this.call(this.runtime, 'PodSandboxStatus', { podSandboxId, verbose });
  }

  async listPodSandbox(filter?: PodSandboxFilter): Promise<PodSandbox[]> {
    return (await this.call<{ items: PodSandbox[] }>(this.runtime, 'ListPodSandbox', { filter })).items;
  }

  /** createContainer returns the container id; `sandboxConfig` is the pod's config, as kubelet sends it. */
  async createContainer(podSandboxId: string, config: ContainerConfig, sandboxConfig: PodSandboxConfig): Promise<string> {
    return (await this.call<{ containerId: string }>(this.runtime, 'CreateContainer', { podSandboxId, config, sandboxConfig })).containerId;
  }

  async startContainer(containerId: string): Promise<void> {
    await this.call(this.runtime, 'StartContainer', { containerId });
  }

  /** stopContainer sends SIGTERM (the image's stop signal), then SIGKILL after `timeoutSeconds`. */
  async stopContainer(containerId: string, timeoutSeconds = 0): Promise<void> {
    await this.call(this.runtime, 'StopContainer', { containerId, timeout: timeoutSeconds }, this.deadlineMs + timeoutSeconds * 1000);
  }

  async removeContainer(containerId: string): Promise<void> {
    await this.call(this.runtime, 'RemoveContainer', { containerId });
  }

  async listContainers(filter?: ContainerFilter): Promise<Container[]> {
    return (await this.call<{ containers: Container[] }>(this.runtime, 'ListContainers', { filter })).containers;
  }

  containerStatus(containerId: string, verbose = false): Promise<ContainerStatusResponse> {
    return this.call(this.runtime, 'ContainerStatus', { containerId, verbose });
  }

  async updateContainerResources(containerId: string, linux: LinuxContainerResources, annotations?: StringMap): Promise<void> {
    await this.call(this.runtime, 'UpdateContainerResources', { containerId, linux, annotations });
  }

  /** execSync runs `cmd` in the container; `timeoutSeconds` 0 means none (the call deadline still applies). */
  execSync(containerId: string, cmd: string[], timeoutSeconds = 0): Promise<ExecSyncResponse> {
    return this.call(this.runtime, 'ExecSync', { containerId, cmd, timeout: timeoutSeconds }, this.deadlineMs + timeoutSeconds * 1000);
  }

  /** exec returns the streaming URL for `cmd`; open it with `execStream`. */
  async exec(req: { containerId: string; cmd: string[]; tty?: boolean; stdin?: boolean; stdout?: boolean; stderr?: boolean }): Promise<string> {
    const full = { tty: false, stdin: false, stdout: true, stderr: !req.tty, ...req };
    return (await this.call<{ url: string }>(this.runtime, 'Exec', full)).url;
  }

  /**
   * execStreaming is Exec + execStream: run `cmd` with optional stdin and collect its output and exit code.
   * A TTY exec always gets stdin: without it the stream's stdin ends at once, and runc's shim shuts the
   * console down on stdin EOF, losing the output.
   */
  async execStreaming(containerId: string, cmd: string[], opts: ExecStreamOptions & { tty?: boolean } = {}): Promise<ExecStreamResult> {
    const tty = opts.tty ?? false;
    const url = await this.exec({ containerId, cmd, tty, stdin: tty || opts.stdin !== undefined });
    return execStream(url, opts);
  }

  /** attach returns the streaming URL of the container's stdio; open it with `sendStdinAndClose`. */
  async attach(req: { containerId: string; stdin?: boolean; tty?: boolean; stdout?: boolean; stderr?: boolean }): Promise<string> {
    const full = { stdin: true, tty: false, stdout: false, stderr: false, ...req };
    return (await this.call<{ url: string }>(this.runtime, 'Attach', full)).url;
  }

  /** portForward returns the streaming URL for the pod's ports; open it with `portForwardOnce`. */
  async portForward(podSandboxId: string, ports: number[]): Promise<string> {
    return (await this.call<{ url: string }>(this.runtime, 'PortForward', { podSandboxId, port: ports })).url;
  }

  async containerStats(containerId: string): Promise<ContainerStats> {
    return (await this.call<{ stats: ContainerStats }>(this.runtime, 'ContainerStats', { containerId })).stats;
  }

  async listContainerStats(filter?: { id?: string; podSandboxId?: string; labelSelector?: StringMap }): Promise<ContainerStats[]> {
    return (await this.call<{ stats: ContainerStats[] }>(this.runtime, 'ListContainerStats', { filter })).stats;
  }

  async listImages(): Promise<Image[]> {
    return (await this.call<{ images: Image[] }>(this.images, 'ListImages', {})).images;
  }

  /** imageStatus returns the image, or null when CRI does not know it. */
  async imageStatus(image: string): Promise<Image | null> {
    return (await this.call<{ image: Image | null }>(this.images, 'ImageStatus', { image: { image } })).image;
  }
}

/** CriError is a failed CRI call: a HullError whose code follows the gRPC status. */
export class CriError extends HullError {
  readonly grpcStatus: number;
  readonly details: string;

  constructor(method: string, err: grpc.ServiceError) {
    super(fromStatusCode(err.code), `${method}: ${err.details || err.message}`, { cause: err });
    this.name = 'CriError';
    this.grpcStatus = err.code;
    this.details = err.details;
  }
}

export interface PodOptions {
  name: string;
  namespace?: string;
  uid?: string;
  hostNetwork?: boolean;
  hostname?: string;
  dnsServers?: string[];
  /** cpuQuota/cpuPeriod/memoryLimitBytes are the pod's summed limits (CRI turns them into sandbox annotations). */
  cpuQuota?: number;
  cpuPeriod?: number;
  memoryLimitBytes?: number;
  labels?: StringMap;
  annotations?: StringMap;
  logDirectory?: string;
  /** sharePid is shareProcessNamespace: the pod's containers share one PID namespace. */
  sharePid?: boolean;
  /** sysctls are the pod's securityContext.sysctls (kubelet passes the ones the node allows). */
  sysctls?: StringMap;
}

/** podConfig builds a PodSandboxConfig the way kubelet fills one for a simple pod. */
export function podConfig(o: PodOptions): PodSandboxConfig {
  const limits = o.cpuQuota !== undefined || o.memoryLimitBytes !== undefined;
  return {
    metadata: { name: o.name, namespace: o.namespace ?? 'default', uid: o.uid ?? randomUUID(), attempt: 0 },
    hostname: o.hostNetwork ? '' : (o.hostname ?? o.name),
    logDirectory: o.logDirectory ?? '',
    ...(o.dnsServers ? { dnsConfig: { servers: o.dnsServers, searches: [], options: [] } } : {}),
    labels: { 'io.kubernetes.pod.name': o.name, ...o.labels },
    annotations: o.annotations ?? {},
    linux: {
      cgroupParent: '',
      securityContext: { namespaceOptions: { network: o.hostNetwork ? 'NODE' : 'POD', pid: o.sharePid ? 'POD' : 'CONTAINER', ipc: 'POD' } },
      ...(o.sysctls ? { sysctls: o.sysctls } : {}),
      ...(limits ? { resources: { cpuPeriod: o.cpuPeriod ?? (o.cpuQuota !== undefined ? 100_000 : 0), cpuQuota: o.cpuQuota ?? 0, cpuShares: 2, memoryLimitInBytes: o.memoryLimitBytes ?? 0 } } : {}),
    },
  };
}

export interface ContainerOptions {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: StringMap;
  workingDir?: string;
  tty?: boolean;
  stdin?: boolean;
  /** stdinOnce: the container's stdin closes when the first attach's stdin ends (`kubectl run -i`). */
  stdinOnce?: boolean;
  memoryLimitBytes?: number;
  cpuQuota?: number;
  cpuPeriod?: number;
  mounts?: Mount[];
  labels?: StringMap;
  annotations?: StringMap;
  /** logPath is relative to the pod's logDirectory; CRI writes no log when either is empty. */
  logPath?: string;
  privileged?: boolean;
  /** sharePid joins the pod's PID namespace (a pod with shareProcessNamespace). */
  sharePid?: boolean;
}

/** containerConfig builds a ContainerConfig the way kubelet fills one for a simple container. */
export function containerConfig(o: ContainerOptions): ContainerConfig {
  const resources: LinuxContainerResources = {
    cpuPeriod: o.cpuPeriod ?? (o.cpuQuota !== undefined ? 100_000 : 0),
    cpuQuota: o.cpuQuota ?? 0,
    cpuShares: 2,
    memoryLimitInBytes: o.memoryLimitBytes ?? 0,
    oomScoreAdj: 1000,
  };
  return {
    metadata: { name: o.name, attempt: 0 },
    image: { image: o.image },
    command: o.command ?? [],
    args: o.args ?? [],
    workingDir: o.workingDir ?? '',
    envs: Object.entries(o.env ?? {}).map(([key, value]) => ({ key, value })),
    mounts: o.mounts ?? [],
    labels: { 'io.kubernetes.container.name': o.name, ...o.labels },
    annotations: o.annotations ?? {},
    logPath: o.logPath ?? '',
    stdin: o.stdin ?? false,
    stdinOnce: o.stdinOnce ?? false,
    tty: o.tty ?? false,
    linux: { resources, securityContext: { privileged: o.privileged ?? false, namespaceOptions: { network: 'POD', pid: o.sharePid ? 'POD' : 'CONTAINER', ipc: 'POD' } } },
  };
}

export interface ExecStreamOptions {
  /** stdin is sent once; it is never followed by EOF (v4 has no half-close): use commands that read a bounded amount. */
  stdin?: string | Buffer;
  /** resize is sent first (TTY execs only). */
  resize?: { width: number; height: number };
  timeoutMs?: number;
}

export interface ExecStreamResult {
  stdout: Buffer;
  stderr: Buffer;
  exitCode: number;
}

const STDIN = 0;
const STDOUT = 1;
const STDERR = 2;
const ERROR = 3;
const RESIZE = 4;

function frame(channel: number, data: string | Buffer): Buffer {
  return Buffer.concat([Buffer.from([channel]), Buffer.from(data)]);
}

function openChannels(url: string, timeoutMs: number, onOpen: (ws: WebSocket) => void, onData: (channel: number, data: Buffer) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url.replace(/^http/, 'ws'), ['v4.channel.k8s.io'], { perMessageDeflate: false, handshakeTimeout: timeoutMs });
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`Stream "${url}" did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
    ws.on('open', () => onOpen(ws));
    ws.on('message', (data: Buffer) => {
      if (data.length > 0) onData(data[0]!, data.subarray(1));
    });
    ws.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`Stream "${url}" failed: ${e.message}`, { cause: e }));
    });
    ws.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * execStream opens an Exec URL (WebSocket, `v4.channel.k8s.io`), sends stdin, and collects stdout,
 * stderr and the exit code from the status the server writes on the error channel before closing.
 */
export async function execStream(url: string, opts: ExecStreamOptions = {}): Promise<ExecStreamResult> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const status: Buffer[] = [];
  await openChannels(url, opts.timeoutMs ?? 60_000, (ws) => {
    if (opts.resize) ws.send(frame(RESIZE, JSON.stringify({ Width: opts.resize.width, Height: opts.resize.height })));
    // In frames of at most 1 MiB: the streaming server drops a connection whose message is too large.
    const stdin = opts.stdin === undefined ? undefined : Buffer.from(opts.stdin);
    for (let at = 0; stdin && at < stdin.length; at += 1 << 20) ws.send(frame(STDIN, stdin.subarray(at, at + (1 << 20))));
  }, (channel, data) => {
    if (channel === STDOUT) out.push(data);
    else if (channel === STDERR) err.push(data);
    else if (channel === ERROR) status.push(data);
  });
  return { stdout: Buffer.concat(out), stderr: Buffer.concat(err), exitCode: exitCodeOf(Buffer.concat(status).toString('utf8')) };
}

interface ApiStatus {
  status?: string;
  message?: string;
  reason?: string;
  details?: { causes?: { reason?: string; message?: string }[] };
}

/** exitCodeOf reads the exit code from a v4 metav1.Status (`NonZeroExitCode` carries it as a cause). */
function exitCodeOf(text: string): number {
  if (text === '') throw new Error('Exec stream closed without a status');
  const s = JSON.parse(text) as ApiStatus;
  if (s.status === 'Success') return 0;
  const cause = s.details?.causes?.find((c) => c.reason === 'ExitCode');
  if (s.reason === 'NonZeroExitCode' && cause?.message) return Number(cause.message);
  throw new Error(`Exec failed: ${s.message ?? text}`);
}

/**
 * portForwardOnce opens a PortForward URL for one `port`, sends `data` into one TCP connection to that
 * port inside the pod, and returns everything the pod sends back until it closes the connection.
 * Each channel's first message is the port (uint16 little-endian), which is stripped.
 */
export async function portForwardOnce(url: string, port: number, data: string | Buffer, timeoutMs = 30_000): Promise<Buffer> {
  const received: Buffer[] = [];
  const errors: Buffer[] = [];
  const seen = new Set<number>();
  const sep = url.includes('?') ? '&' : '?';
  await openChannels(`${url}${sep}port=${port}`, timeoutMs, (ws) => ws.send(frame(0, data)), (channel, payload) => {
    const body = seen.has(channel) ? payload : payload.subarray(2);
    seen.add(channel);
    if (channel === 0) received.push(body);
    else if (channel === 1) errors.push(body);
  });
  const error = Buffer.concat(errors).toString('utf8');
  if (error) throw new Error(`Port-forward to port ${port} failed: ${error}`);
  return Buffer.concat(received);
}

/**
 * sendStdinAndClose opens an Attach or Exec URL, sends `chunks` on the stdin channel (each once the
 * one before has gone to the socket: backpressure) and closes the stream right after the last one, as
 * `kubectl exec -i … < file` does: for the server that is the end of stdin.
 */
export async function sendStdinAndClose(url: string, chunks: Iterable<Buffer>, timeoutMs = 600_000): Promise<void> {
  await openChannels(url, timeoutMs, (ws) => {
    void (async () => {
      for (const chunk of chunks) {
        await new Promise<void>((resolve, reject) => ws.send(frame(STDIN, chunk), (e) => (e ? reject(e) : resolve())));
      }
      ws.close(1000);
    })().catch(() => ws.terminate());
  }, () => {});
}
