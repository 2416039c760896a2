/**
 * host-runtime — the programs hull runs on a node, when hull brought them itself.
 *
 * The installer image (packaging/node-runtime.ts) ships `<hull>/runtime/`: node, QEMU, busybox and
 * the util-linux, iproute2, nftables, iptables and procps programs hull runs, each with its own
 * loader and libraries (bin/, lib/, share/qemu), so that a node needs none of them. A directory is
 * such a runtime when it holds HOST_RUNTIME_MARKER. hull uses one when the node that runs hull is
 * that runtime's own node: then the runtime's bin/ goes first on PATH (every program hull runs is
 * looked up there first, and the children hull starts inherit it) and iptables finds its extensions
 * in the runtime. A checkout's hull, run by the host's node, runs the host's programs.
 */
import { existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** HOST_RUNTIME_MARKER names the file that makes a directory a hull host runtime. */
export const HOST_RUNTIME_MARKER = '.hull-runtime';
/** HOST_RUNTIME_LOADER is the runtime's own dynamic loader, relative to the runtime. */
export const HOST_RUNTIME_LOADER = 'lib/ld-linux-x86-64.so.2';
/** HOST_RUNTIME_XTABLES holds iptables' extensions, relative to the runtime (its XTABLES_LIBDIR). */
export const HOST_RUNTIME_XTABLES = 'lib/xtables';

/** hostRuntimeOf is the runtime whose bin/ holds `binary` (a real path), or undefined. */
export function hostRuntimeOf(binary: string): string | undefined {
  const bin = dirname(binary);
  if (basename(bin) !== 'bin') return undefined;
  return existsSync(join(dirname(bin), HOST_RUNTIME_MARKER)) ? dirname(bin) : undefined;
}

/**
 * useHostRuntime puts the runtime of the running node first on PATH (once) and returns it; with a
 * node of the host's own, it changes nothing and returns undefined.
 */
export function useHostRuntime(env: NodeJS.ProcessEnv = process.env, execPath = process.execPath): string | undefined {
  const runtime = hostRuntimeOf(execPath);
  if (runtime === undefined) return undefined;
  const bin = join(runtime, 'bin');
  const path = env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin';
  if (path.split(':')[0] !== bin) env['PATH'] = `${bin}:${path}`;
  env['XTABLES_LIBDIR'] = join(runtime, HOST_RUNTIME_XTABLES);
  return runtime;
}
