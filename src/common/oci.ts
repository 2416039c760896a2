/**
 * The OCI runtime spec as host and agent read it (only the fields hull looks at are typed; the rest
 * passes through), and the bind-mount rules both sides apply: the host when it turns a host bind into
 * the guest's, the agent again when it checks what the host sent (the guest trusts no one either).
 */

export interface OciProcess {
  terminal?: boolean;
  args?: string[];
  env?: string[];
  cwd?: string;
  user?: { uid: number; gid: number; additionalGids?: number[] };
  apparmorProfile?: string;
  selinuxLabel?: string;
  consoleSize?: { height: number; width: number };
  [key: string]: unknown;
}

export interface OciMount {
  destination: string;
  type?: string;
  source?: string;
  options?: string[];
}

export interface OciSpec {
  ociVersion?: string;
  process?: OciProcess;
  root?: { path?: string; readonly?: boolean };
  hostname?: string;
  mounts?: OciMount[];
  hooks?: unknown;
  annotations?: Record<string, string>;
  linux?: {
    cgroupsPath?: string;
    namespaces?: Array<{ type: string; path?: string }>;
    resources?: Record<string, unknown>;
    sysctl?: Record<string, string>;
    [key: string]: unknown;
  };
  [key: string]: unknown;
}

/**
 * Options of a bind that the guest's bind keeps: the restricting flags and private/slave
 * propagation. Shared propagation, idmaps, SELinux relabels, rw and anything else are dropped.
 */
const KEPT_BIND_OPTIONS = new Set(['nosuid', 'nodev', 'noexec', 'private', 'rprivate', 'slave', 'rslave']);

/** isBindMount tells whether a spec mount is a bind (type "bind", or a bind/rbind option). */
export function isBindMount(m: { type?: string; options?: readonly string[] }): boolean {
  return m.type === 'bind' || (m.options ?? []).some((o) => o === 'bind' || o === 'rbind');
}

/** isReadOnly tells whether bind options ask for a read-only mount ("ro" or "rro" anywhere wins). */
export function isReadOnly(options: readonly string[] | undefined): boolean {
  return (options ?? []).some((o) => o === 'ro' || o === 'rro');
}

/** guestBindOptions are the options crun gets for a bind: rbind, ro when asked, the kept options once each. */
export function guestBindOptions(options: readonly string[] | undefined): string[] {
  const kept = (options ?? []).filter((o) => KEPT_BIND_OPTIONS.has(o));
  return ['rbind', ...(isReadOnly(options) ? ['ro'] : []), ...new Set(kept)];
}
