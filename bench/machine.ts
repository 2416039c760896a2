/** What the numbers were measured on, saved with them. */
import { execFileSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { runscVersion } from './runtimes.js';

function firstLine(file: string, args: string[]): string {
  try {
    return execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).split('\n')[0]!.trim();
  } catch (e) {
    return `unknown (${(e as Error).message.split('\n')[0]})`;
  }
}

/** allocatedMiB is what the files below `dir` hold allocated (st_blocks). */
function allocatedMiB(dir: string): number | null {
  try {
    let blocks = 0;
    for (const entry of readdirSync(dir, { recursive: true }) as string[]) {
      const st = statSync(join(dir, entry));
      if (st.isFile()) blocks += st.blocks;
    }
    return Math.round((blocks * 512) / 2 ** 20);
  } catch {
    return null;
  }
}

export interface MachineInfo {
  accel: string;
  accelReason: string;
  cores: number;
  cpuModel: string;
  memoryMiB: number;
  hostKernel: string;
  guestKernel: string;
  guestImage: string;
  node: string;
  containerd: string;
  runc: string;
  runsc: string;
  qemu: string;
  /** hullTemplateRamMiB is what the saved VM templates' RAM files hold allocated on the disk (clones map them; their page cache is in no process's PSS in full). */
  hullTemplateRamMiB: number | null;
}

export function machineInfo(o: { accel: string; accelReason: string; guestKernel: string; guestImage: string; templateRamDir: string }): MachineInfo {
  return {
    accel: o.accel,
    accelReason: o.accelReason,
    cores: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memoryMiB: Math.round(totalmem() / 2 ** 20),
    hostKernel: release(),
    guestKernel: o.guestKernel,
    guestImage: o.guestImage,
    node: process.version,
    containerd: firstLine('containerd', ['--version']),
    runc: firstLine('runc', ['--version']),
    runsc: runscVersion(),
    qemu: firstLine('qemu-system-x86_64', ['--version']),
    hullTemplateRamMiB: allocatedMiB(o.templateRamDir),
  };
}
