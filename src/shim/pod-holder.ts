/**
 * The pod holder: what a CRI pod's sandbox container (pause) is in hull. With runc, pause is a
 * process that keeps the pod's namespaces alive. In hull the VM is the pod and holds them, so the
 * sandbox container runs nothing in the guest: its task is the VM, and it ends when it is killed
 * (or the VM exits). Kubelet never execs into it. This saves a container start in every new pod.
 */
import { HullError } from '../errors/index.js';
import type { OciSpec } from '../sandbox/index.js';
import { checkSysctls } from '../sandbox/spec.js';
import { CRI_CONTAINER_TYPE } from './address.js';

const SIGINT = 2;
const SIGKILL = 9;
const SIGTERM = 15;
/** Signals whose default action is to do nothing: they leave pause running. */
const IGNORED_BY_DEFAULT = new Set([17 /* SIGCHLD */, 18 /* SIGCONT */, 23 /* SIGURG */, 28 /* SIGWINCH */]);

/** isPodHolder tells whether `spec` is a CRI pod's sandbox container. */
export function isPodHolder(spec: { annotations?: Record<string, string> }): boolean {
  return spec.annotations?.[CRI_CONTAINER_TYPE] === 'sandbox';
}

/**
 * holderExit is the exit status pause would report after `signal`, or undefined if pause would go
 * on: it exits 0 on SIGINT and SIGTERM (its handler), and a signal's default action does the rest.
 */
export function holderExit(signal: number): number | undefined {
  if (signal === SIGINT || signal === SIGTERM) return 0;
  if (signal === SIGKILL) return 128 + SIGKILL;
  if (signal === 0 || IGNORED_BY_DEFAULT.has(signal)) return undefined;
  return 128 + signal;
}

/**
 * Host namespaces a pod may ask for and why hull refuses each. CRI leaves the namespace out of the
 * sandbox spec's linux.namespaces when the pod shares the host's (containerd 1.6
 * sandbox_run_linux.go: WithoutNamespace for NamespaceMode_NODE), so a missing entry is the request.
 */
const HOST_NAMESPACES = [
  { type: 'network', field: 'hostNetwork', what: 'the host network', own: 'its own network' },
  { type: 'pid', field: 'hostPID', what: "the host's PID namespace", own: 'its own processes' },
  { type: 'ipc', field: 'hostIPC', what: "the host's IPC namespace", own: 'its own IPC' },
] as const;

/**
 * checkPodNamespaces refuses hostNetwork, hostPID and hostIPC pods (InvalidArgument, naming the field):
 * a pod in a VM cannot share the host's namespaces, and must not seem to. It refuses as well a pod
 * sysctl that is not namespaced (it would set the guest kernel's, outside the pod's namespaces). It
 * runs before anything is made.
 */
export function checkPodNamespaces(spec: OciSpec): void {
  if (!isPodHolder(spec)) return;
  const types = new Set((spec.linux?.namespaces ?? []).map((ns) => ns.type));
  const refused = HOST_NAMESPACES.filter((ns) => !types.has(ns.type)).map(
    (ns) => `hull pods cannot use ${ns.what} (${ns.field}: true): each hull pod runs in its own VM with ${ns.own}`,
  );
  if (refused.length > 0) throw new HullError('invalid_argument', refused.join('; '));
  podSysctls(spec);
}

/**
 * podSysctls are the pod's sysctls, from a pod holder's spec (CRI's sandbox spec carries them);
 * refuses (InvalidArgument) one that is not namespaced. Every app container of the pod gets them
 * (withPodSysctls in src/sandbox/spec.ts). Empty for a container that is not a pod holder.
 */
export function podSysctls(spec: OciSpec): Record<string, string> {
  return isPodHolder(spec) ? checkSysctls(spec.linux?.sysctl, 'The pod') : {};
}
