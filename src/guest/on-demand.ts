/**
 * on-demand — the kernel modules a privileged workload expects (bridges, veth, vxlan, tun, macvlan,
 * netfilter for iptables and nftables with conntrack and NAT, overlay, loop, fuse, squashfs), kept on
 * the root disk in `/lib/modules/<release>/` as depmod lays them out, and loaded only when asked for.
 *
 * Nothing loads them at boot: a container's `modprobe` (busybox's, or the guest's /sbin/modprobe the
 * kernel runs itself for `ip link add … type bridge`, an overlay mount or an nft rule) reads the
 * modules.dep and modules.alias written here. The modules the initramfs loads at boot are not copied
 * again; modules.dep still names them as dependencies, and modprobe skips them as already loaded.
 *
 * busybox modprobe reads a module's modules.dep line as the module followed by *every* module it needs,
 * loading them from the last to the first (kmod's format): the line holds the whole closure, each
 * dependency after the modules that need it.
 */

import { HullError } from '../errors/index.js';
import { moduleLoadOrder, resolveIndexed, type KernelModule, type ModuleIndex } from './modules.js';

/**
 * ON_DEMAND_MODULES are loaded on demand, with their dependencies. Debian builds them all as modules
 * (ipv6 is built in). br_netfilter makes bridged traffic pass iptables (Kubernetes CNI plugins ask for it).
 */
export const ON_DEMAND_MODULES: readonly string[] = Object.freeze([
  'bridge',
  'br_netfilter',
  'veth',
  'vxlan',
  'tun',
  'macvlan',
  'ipvlan',
  'dummy',
  'loop',
  'fuse',
  'squashfs',
  'nf_tables',
  'nf_conntrack',
  'nf_nat',
  'ip_tables',
  'iptable_nat',
  'iptable_filter',
  'ip6_tables',
  'ip6table_nat',
  'ip6table_filter',
]);

/**
 * ON_DEMAND_MODULE_DIRS hold more modules to carry whole, below `/lib/modules/<release>/`: all of
 * netfilter (every iptables match and target, every nftables expression, ipset, IPVS), so that rules
 * written for a normal node load what they name. ~9 MB, most of the on-demand set.
 */
export const ON_DEMAND_MODULE_DIRS: readonly string[] = Object.freeze([
  'kernel/net/netfilter',
  'kernel/net/ipv4/netfilter',
  'kernel/net/ipv6/netfilter',
  'kernel/net/bridge',
]);

/** OnDemandModule is a module for the root disk. */
export interface OnDemandModule extends KernelModule {
  /** relPath below `/lib/modules/<release>/`, as in the package ("kernel/net/bridge/bridge.ko"). */
  relPath: string;
}

/** OnDemandSet is what the root disk's `/lib/modules/<release>/` gets. */
export interface OnDemandSet {
  /** modules to copy (the closure, without the modules loaded at boot). */
  modules: OnDemandModule[];
  /** modulesDep and modulesAlias are the text of modules.dep and modules.alias. */
  modulesDep: string;
  modulesAlias: string;
}

/**
 * resolveOnDemand picks `names`, every module under `dirs` and their closure from `index`, leaving
 * out `atBoot` (the initramfs's modules), and makes modules.dep and modules.alias for them. A name
 * that is neither a module nor built in is an error: the list is ours and must match the kernel.
 */
export async function resolveOnDemand(
  index: ModuleIndex,
  names: readonly string[],
  dirs: readonly string[],
  atBoot: ReadonlySet<string>,
): Promise<OnDemandSet> {
  const missing = names.filter((n) => !index.files.has(n) && !index.builtin.has(n));
  if (missing.length > 0) {
    throw new HullError('failed_precondition', `Cannot find kernel module${missing.length > 1 ? 's' : ''} ${missing.map((n) => `"${n}"`).join(', ')} in the kernel package`);
  }
  const prefix = (path: string): string => path.slice(index.moduleDir.length + 1);
  const inDirs = [...index.files].filter(([, path]) => dirs.some((d) => prefix(path).startsWith(`${d}/`))).map(([name]) => name).sort();
  const roots = [...new Set([...names, ...inDirs])];
  const closure = await resolveIndexed(index, roots);
  const relPathOf = (name: string): string | undefined => {
    const path = index.files.get(name);
    return path === undefined ? undefined : prefix(path).replace(/\.ko\.gz$/, '.ko');
  };
  const modules = closure
    .filter((m) => !atBoot.has(m.name))
    .map((m) => ({ ...m, relPath: relPathOf(m.name)! }))
    .sort((a, b) => (a.relPath < b.relPath ? -1 : a.relPath > b.relPath ? 1 : 0));
  const dependsOf = new Map(closure.map((m) => [m.name, m.depends]));
  return {
    modules,
    modulesDep: modulesDep(modules, (n) => dependsOf.get(n), relPathOf, (n) => index.builtin.has(n)),
    modulesAlias: modulesAlias(modules),
  };
}

/**
 * modulesDep writes modules.dep: for each module "relPath: dep …" with its whole dependency closure,
 * each dependency after the ones that need it (busybox and kmod load the list from its end).
 */
export function modulesDep(
  modules: ReadonlyArray<{ name: string; relPath: string }>,
  depends: (name: string) => readonly string[] | undefined,
  relPathOf: (name: string) => string | undefined,
  isBuiltin: (name: string) => boolean = () => false,
): string {
  return modules
    .map((m) => {
      const needs = moduleLoadOrder([m.name], depends, isBuiltin).slice(0, -1).reverse();
      const paths = needs.map((n) => {
        const p = relPathOf(n);
        if (p === undefined) throw new HullError('internal', `Kernel module "${n}" (needed by ${m.name}) has no path`);
        return p;
      });
      return `${m.relPath}:${paths.map((p) => ` ${p}`).join('')}\n`;
    })
    .join('');
}

/** modulesAlias writes modules.alias: "alias PATTERN name" for every alias a module declares. */
export function modulesAlias(modules: ReadonlyArray<{ name: string; aliases: readonly string[] }>): string {
  const lines = ['# Aliases extracted from modules themselves.\n'];
  for (const m of modules) for (const a of m.aliases) if (/^\S+$/.test(a)) lines.push(`alias ${a} ${m.name}\n`);
  return lines.join('');
}
