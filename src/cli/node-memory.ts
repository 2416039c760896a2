/**
 * What hull holds on the node outside any pod's cgroup, as `hull env`, `hull ps` and `hull monitor`
 * report it: the template store's RAM files (allocated blocks) and the pool's cgroup (ready VMs,
 * its owner, and what adopted VMs were charged before a pod took them).
 */
import { stat } from 'node:fs/promises';
import type { HullConfig } from '../config/index.js';
import { listTemplates } from '../factory/index.js';
import { poolCgroup } from '../pool/index.js';
import { memoryUsage } from '../sandbox/index.js';

export interface NodeMemory {
  /**
   * templateAllocatedBytes: what the template RAM files hold allocated (st_blocks), all together;
   * null when this process cannot see the store (the DaemonSet's monitor has no /var/lib/hull).
   */
  templateAllocatedBytes: number | null;
  templateMaxBytes: number;
  /** poolMemoryBytes: what the pool's cgroup is charged now; null when it does not exist. */
  poolMemoryBytes: number | null;
  poolMemoryLimitBytes: number;
}

const MIB = 1024 * 1024;

export async function nodeMemory(config: HullConfig): Promise<NodeMemory> {
  const visible = await stat(config.templatesDir).then(() => true, () => false);
  const templates = visible ? await listTemplates({ templatesRoot: config.templatesDir, ramRoot: config.templateRamDir }).catch(() => undefined) : undefined;
  return {
    templateAllocatedBytes: templates?.reduce((sum, t) => sum + t.ramAllocatedBytes, 0) ?? null,
    templateMaxBytes: config.templateMaxRamMiB * MIB,
    poolMemoryBytes: (await memoryUsage(poolCgroup(config.poolDir)).catch(() => undefined)) ?? null,
    poolMemoryLimitBytes: config.poolMemoryLimitMiB * MIB,
  };
}
