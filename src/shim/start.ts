/**
 * `containerd-shim-hull-v2 start`: find or start the pod's shim and print its
 * address. Containers of one pod share one shim (grouped by the CRI sandbox
 * id). The daemon never inherits this command's stdout/stderr: containerd
 * reads them to the end, and would wait for the daemon's lifetime.
 */
import { spawn } from 'node:child_process';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { HullError } from '../errors/index.js';
import { parseSpec } from '../sandbox/spec.js';
import { groupId, shimSocketPath, SHIM_SOCKET_DIR, writeAddressFile } from './address.js';
import type { ShimFlags } from './flags.js';
import { daemonSnapshot } from './snapshot-file.js';

const DAEMON_START_TIMEOUT_MS = 10_000;

function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** startCommand prints the pod shim's address; `shimDir` holds the daemon's startup snapshot, if any. */
export async function startCommand(flags: ShimFlags, shimDir?: string): Promise<string> {
  const bundle = process.cwd();
  const spec = parseSpec(await readFile('config.json', 'utf8'), `${bundle}/config.json`);
  const socketPath = shimSocketPath(flags.address, flags.namespace, groupId(flags.id, spec.annotations));
  const address = `unix://${socketPath}`;
  if (!(await socketAnswers(socketPath))) {
    await rm(socketPath, { force: true });
    await mkdir(SHIM_SOCKET_DIR, { recursive: true, mode: 0o711 });
    const snapshot = shimDir === undefined ? undefined : daemonSnapshot(shimDir);
    let outcome = await spawnDaemon(flags, bundle, socketPath, snapshot);
    // A daemon that ended without a word never ran hull's code: the snapshot did not load (a node
    // that differs from the one that built it in more than version and architecture).
    if (snapshot && outcome === 'exited') {
      await rm(socketPath, { force: true });
      outcome = await spawnDaemon(flags, bundle, socketPath, undefined);
    }
    // Two containers of one pod may race to start the shim: the loser uses the winner's.
    if (outcome !== 'ready' && !(await socketAnswers(socketPath))) throw new HullError('unavailable', `Shim daemon failed to start: ${outcome}`);
  }
  await writeAddressFile(bundle, address);
  return address;
}

function spawnDaemon(flags: ShimFlags, bundle: string, socketPath: string, snapshot: string | undefined): Promise<string> {
  // The daemon is this same program (process.argv[1]: bin/containerd-shim-hull-v2 as containerd
  // found it), so `ps` names it; it loads the same bundle, or starts from the snapshot of it.
  const args = [...(snapshot ? ['--snapshot-blob', snapshot] : []), process.argv[1]!, '-namespace', flags.namespace, '-address', flags.address, '-publish-binary', flags.publishBinary, '-id', flags.id, '-bundle', bundle, '-socket', socketPath];
  if (flags.debug) args.push('-debug');
  const child = spawn(process.execPath, args, { cwd: bundle, detached: true, stdio: ['ignore', 'ignore', 'ignore', 'pipe'] });
  return new Promise((resolve) => {
    const pipe = child.stdio[3] as NodeJS.ReadableStream;
    let text = '';
    const timer = setTimeout(() => finish('timed out'), DAEMON_START_TIMEOUT_MS);
    const finish = (outcome: string): void => {
      clearTimeout(timer);
      pipe.removeAllListeners();
      (pipe as unknown as { destroy(): void }).destroy();
      if (outcome !== 'ready') child.kill('SIGKILL');
      child.unref();
      resolve(outcome);
    };
    pipe.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      if (text.includes('\n')) finish(text.trim());
    });
    pipe.on('end', () => finish(text.trim() || 'exited'));
  });
}
