/**
 * shell — programs the agent runs several at a time: one busybox shell runs them in order. Under TCG
 * every spawn from node (a fork of the agent's large process) costs ~17 ms, an applet started by the
 * shell ~4: the sandbox's and the pod network's setup take 2 to 10 programs.
 */
import { run } from '../common/run.js';

/** shellQuote makes `arg` one word of a POSIX shell, whatever it holds. */
function shellQuote(arg: string): string {
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** runInOrder runs the commands in one shell, in order, stopping at the first that fails (its stderr is the error). */
export async function runInOrder(commands: string[][]): Promise<void> {
  if (commands.length === 0) return;
  await run('/bin/sh', ['-c', ['set -e', ...commands.map((c) => c.map(shellQuote).join(' '))].join('\n')]);
}
