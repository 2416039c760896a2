/**
 * The three runtimes of the benchmark and how each is reached, on one private containerd:
 *
 * - runc: containerd's default runtime (CRI handler '', `ctr run --runtime io.containerd.runc.v2`);
 * - gVisor: Debian's `runsc` (no containerd-shim-runsc-v1 in Debian), driven by containerd's runc
 *   shim with runsc as its OCI binary (CRI handler `runsc`; `ctr run --runc-binary`);
 * - hull: its shim, a VM per pod (CRI handler `hull`), 512 MiB / 1 vCPU, templates on, the pool of
 *   warm VMs at its default size (HULL_BENCH_POOL overrides); for P3 also `hull-pool-batch` (a pool
 *   of the batch's size) and `hull-no-pool` (pool_size 0), each a runtime of its own.
 *
 * gVisor through the runc shim needs a wrapper, written at bench time into our own directory:
 * - `--network=none`: runsc 20221219 decides it is in the root network namespace when
 *   /proc/sys/net/core/rmem_default exists, and Linux 6.x shows that file in every namespace, so its
 *   default network mode refuses every pod. gVisor pods get loopback only (ctr's runc containers get
 *   an empty netns too; CRI still sets up the pod's veth, which runsc does not use);
 * - `runsc start` with its output in a file: for a pod's second container, start launches that
 *   container's gofer, which inherits the stdout pipe the runc shim reads to the end, so the shim's
 *   Start (and CRI's StartContainer) would wait forever.
 * The runc shim also sees every container of a gVisor pod as the sandbox process, so it never
 * reports an app container's exit: pods.ts tears gVisor pods down by killing their shim.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_CONFIG } from '../src/config/index.js';
import type { RuntimeSpec } from '../test/harness/containerd.js';
import { HULL_RUNTIME, prepareHullRuntime, type HullRuntime } from '../test/harness/hull-runtime.js';
import { BUSYBOX_REF } from '../test/harness/oci-image.js';

export type RuntimeName = 'runc' | 'gvisor' | 'hull';
/** RUNTIMES is the order of every interleaved round and of the table's columns. */
export const RUNTIMES: readonly RuntimeName[] = ['runc', 'gvisor', 'hull'];
export const RUNC_RUNTIME = 'io.containerd.runc.v2';
export const RUNSC = '/usr/bin/runsc';
/** VM_MEMORY_MIB keeps hull's VMs small on a 2-core machine (1 vCPU is hull's default). */
export const VM_MEMORY_MIB = 512;

export interface Gvisor {
  dir: string;
  /** wrapper is the OCI binary containerd's runc shim and ctr are given. */
  wrapper: string;
  /** criRoot, ctrRoot and runRoot are runsc's state roots for CRI pods, `ctr run` and direct `run`. */
  criRoot: string;
  ctrRoot: string;
  runRoot: string;
  remove(): void;
}

function prepareGvisor(): Gvisor {
  mkdirSync('/run/hull-bench', { recursive: true, mode: 0o700 });
  const dir = mkdtempSync('/run/hull-bench/gvisor-');
  const wrapper = join(dir, 'runsc');
  writeFileSync(wrapper, [
    '#!/bin/sh',
    '# runsc for containerd\'s runc shim; see bench/runtimes.ts for why each line is here.',
    'case " $* " in',
    '*" start "*)',
    `  out=$(mktemp -p ${dir} start.XXXXXX) || exit 1`,
    `  ${RUNSC} --network=none "$@" >"$out" 2>&1`,
    '  rc=$?',
    '  cat "$out"',
    '  rm -f "$out"',
    '  exit $rc ;;',
    'esac',
    `exec ${RUNSC} --network=none "$@"`,
    '',
  ].join('\n'));
  chmodSync(wrapper, 0o755);
  const sub = (name: string): string => {
    const p = join(dir, name);
    mkdirSync(p, { mode: 0o700 });
    return p;
  };
  return { dir, wrapper, criRoot: sub('cri'), ctrRoot: sub('ctr'), runRoot: sub('run'), remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface BenchRuntimes {
  hull: HullRuntime;
  /** hullPoolBatch has a pool of P3's batch size; hullNoPool none (CRI handlers HULL_POOL_BATCH, HULL_NO_POOL). */
  hullPoolBatch: HullRuntime;
  hullNoPool: HullRuntime;
  gvisor: Gvisor;
  /** hullConfigs are `hull run` configs with templates on and off (run root and VM size as the shim's). */
  hullConfigs: { templates: string; cold: string };
  /** containerd is startContainerd's runtimes table (the `hull` and `runsc` CRI handlers). */
  containerd: Record<string, RuntimeSpec>;
  handler(name: RuntimeName): string;
  /** ctrRunArgs: `ctr run --rm` of `command` (default `true`) in the runtime. */
  ctrRunArgs(name: RuntimeName, id: string, command?: string[]): string[];
  remove(): void;
}

export const HULL_POOL_BATCH = 'hull-pool-batch';
export const HULL_NO_POOL = 'hull-no-pool';

export function prepareRuntimes(batch: number): BenchRuntimes {
  const poolSize = Number(process.env['HULL_BENCH_POOL'] ?? DEFAULT_CONFIG.poolSize);
  const hull = prepareHullRuntime({ name: 'bench', memoryMiB: VM_MEMORY_MIB, poolSize });
  const hullPoolBatch = prepareHullRuntime({ name: 'bench-pb', memoryMiB: VM_MEMORY_MIB, poolSize: batch });
  const hullNoPool = prepareHullRuntime({ name: 'bench-np', memoryMiB: VM_MEMORY_MIB, poolSize: 0 });
  const gvisor = prepareGvisor();
  const hullConfig = (name: string, templates: boolean): string => {
    const path = join(hull.work, name);
    writeFileSync(path, `default_memory = ${VM_MEMORY_MIB}\nrun_root = "${hull.runRoot}"\ntemplates = ${templates}\n`);
    return path;
  };
  const handlers: Record<RuntimeName, string> = { runc: '', gvisor: 'runsc', hull: 'hull' };
  return {
    hull,
    hullPoolBatch,
    hullNoPool,
    gvisor,
    hullConfigs: { templates: hullConfig('templates.toml', true), cold: hullConfig('cold.toml', false) },
    containerd: { ...hull.runtimes, [HULL_POOL_BATCH]: hullPoolBatch.runtimes['hull']!, [HULL_NO_POOL]: hullNoPool.runtimes['hull']!, runsc: { runtimeType: RUNC_RUNTIME, options: { BinaryName: gvisor.wrapper, Root: gvisor.criRoot } } },
    handler: (name) => handlers[name],
    ctrRunArgs(name, id, command = ['true']) {
      const runtime = {
        runc: ['--runtime', RUNC_RUNTIME],
        gvisor: ['--runtime', RUNC_RUNTIME, '--runc-binary', gvisor.wrapper, '--runc-root', gvisor.ctrRoot],
        hull: ['--runtime', HULL_RUNTIME, '--runtime-config-path', hull.configPath],
      }[name];
      return ['run', '--rm', ...runtime, BUSYBOX_REF, id, ...command];
    },
    remove() {
      hull.remove();
      hullPoolBatch.remove();
      hullNoPool.remove();
      gvisor.remove();
    },
  };
}

/** runscVersion is the first line of `runsc --version`. */
export function runscVersion(): string {
  return execFileSync(RUNSC, ['--version'], { encoding: 'utf8' }).split('\n')[0]!.trim();
}
