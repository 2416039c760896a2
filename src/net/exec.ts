/** Running iproute2/tc/nft inside a network namespace (nsenter, so no named netns is needed). */
import { run } from '../common/run.js';

/** inNetns runs file in netns and returns its stdout; input, when given, is written to its stdin (e.g. `nft -f -`). */
export async function inNetns(netns: string, file: string, args: string[], input?: string): Promise<string> {
  return (await run('nsenter', [`--net=${netns}`, '--', file, ...args], { input: input ?? '', maxOutputBytes: 4 << 20 })).stdout;
}
