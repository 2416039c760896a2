/** runtime-options: what hull reads from containerd's runtime options at a pod's first Create. */
import { OptionsSchema } from '../proto/gen/runtimeoptions_pb.js';
import { decode } from '../proto/rpc.js';

/** runtimeConfigPath is the ConfigPath of CRI's runtime options (runtimeoptions.v1.Options), if any. */
export function runtimeConfigPath(options: { typeUrl: string; value: Uint8Array } | undefined): string | undefined {
  if (!options || !options.typeUrl.endsWith('runtimeoptions.v1.Options')) return undefined;
  return decode(OptionsSchema, options.value, 'runtime options').configPath || undefined;
}
