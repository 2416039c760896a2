/** Running iproute2/tc/nft inside a network namespace (nsenter, so no named netns is needed). */
import { run } from '../common/run.js';
import { HullError } from '../errors/index.js';

/** inNetns runs file in netns and returns its stdout; input, when given, is written to its stdin (e.g. `nft -f -`). */
export async function inNetns(netns: string, file: string, args: string[], input?: string): Promise<string> {
  return (await run('nsenter', [`--net=${netns}`, '--', file, ...args], { input: input ?? '', maxOutputBytes: 4 << 20 })).stdout;
}

/**
 * inNetnsBatch runs several commands of `ip` or `tc` in netns with one process (`-batch -`), in order,
 * stopping at the first that fails. Each word must be plain: the batch format splits on blanks and
 * reads quotes, backslashes and '#' (names come from the pod's netns, made by CNI, not by the pod).
 */
export async function inNetnsBatch(netns: string, file: 'ip' | 'tc', commands: string[][]): Promise<void> {
  for (const word of commands.flat()) {
    if (!/^[^\s"'\\#]+$/.test(word)) throw new HullError('invalid_argument', `Cannot pass "${word}" to ${file} -batch`);
  }
  await inNetns(netns, file, ['-batch', '-'], commands.map((c) => `${c.join(' ')}\n`).join(''));
}
