/** Running iproute2/tc/nft inside a network namespace (nsenter, so no named netns is needed). */
import { execFile } from 'node:child_process';
import { HullError } from '../errors/index.js';

/** inNetns runs file in netns; input, when given, is written to its stdin (e.g. `nft -f -`). */
export function inNetns(netns: string, file: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile('nsenter', [`--net=${netns}`, '--', file, ...args], { maxBuffer: 4 << 20 }, (e, stdout, stderr) =>
      e ? reject(new HullError('internal', `${file} ${args.join(' ')} in ${netns} failed: ${stderr.trim() || e.message}`)) : resolve(stdout),
    );
    // A child that exits before reading stdin gives EPIPE here; its exit status reports the failure.
    child.stdin?.on('error', () => {});
    child.stdin?.end(input ?? '');
  });
}
