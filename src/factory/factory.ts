/**
 * TemplateFactory is the Sandbox's VmFactory: it starts a sandbox's VM as a clone of a saved
 * template of the same machine (made on first use: that sandbox pays one boot) instead of booting
 * it. It sits above the VMM as Kata's factory/ does, and uses only the VmDriver interface and the
 * agent client.
 */
import type { VmFactory } from '../sandbox/index.js';
import type { VmDriver, VmSpec } from '../vmm/index.js';
import { createTemplate } from './template-create.js';
import { cloneSpec, rootsOf, type TemplateRoots } from './template.js';

export class TemplateFactory implements VmFactory {
  readonly dirs: readonly string[];

  constructor(
    private readonly driver: VmDriver,
    private readonly roots: TemplateRoots = {},
  ) {
    const { templatesRoot, ramRoot } = rootsOf(roots);
    this.dirs = [templatesRoot, ramRoot];
  }

  async cloneOf(cold: VmSpec, imageId: string): Promise<VmSpec | undefined> {
    const template = await createTemplate({
      ...this.roots,
      driver: this.driver,
      image: { id: imageId, kernel: cold.kernel, initrd: cold.initrd, rootDisk: cold.rootDisk },
      vcpus: cold.vcpus,
      memoryMiB: cold.memoryMiB,
      accel: cold.accel ?? 'auto',
      ...(cold.kernelArgs ? { kernelArgs: cold.kernelArgs } : {}),
      ...(cold.startTimeoutMs !== undefined ? { bootTimeoutMs: cold.startTimeoutMs } : {}),
      ...(cold.jail ? { jail: cold.jail } : {}),
    });
    if (template === undefined) return undefined;
    return cloneSpec(template, { id: cold.id, stateDir: cold.stateDir, sharedDir: cold.sharedDir, net: cold.net, startTimeoutMs: cold.startTimeoutMs, jail: cold.jail });
  }
}
