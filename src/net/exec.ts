/** Running iproute2/tc inside a network namespace (nsenter, so no named netns is needed). */
import { execFile } from 'node:child_process';
import { HullError } from '../errors/index.js';

export function inNetns(netns: string, file: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile('nsenter', [`--net=${netns}`, '--', file, ...args], { maxBuffer: 4 << 20 }, (e, stdout, stderr) =>
      e ? reject(new HullError('internal', `${file} ${args.join(' ')} in ${netns} failed: ${stderr.trim() || e.message}`)) : resolve(stdout),
    ),
  );
}
