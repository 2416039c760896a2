/**
 * Reading what Task requests point to (the bundle's OCI spec) or carry as opaque bytes (an exec's
 * OCI Process, an update's resources), and encoding the ones containerd reads back (Pids' process details).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { HullError, isUnavailable } from '../errors/index.js';
import type { CallContext } from '../ttrpc/index.js';
import { parseSpec, type OciProcess, type OciSpec } from '../sandbox/index.js';
import type { RootfsMount } from './rootfs.js';

const PROCESS_SPEC_TYPE = 'types.containerd.io/opencontainers/runtime-spec/1/Process';

/** parseExecSpec reads ExecProcessRequest.spec: an Any holding an OCI Process as JSON. */
export function parseExecSpec(spec: { typeUrl: string; value: Uint8Array } | undefined): OciProcess {
  if (spec && spec.typeUrl !== PROCESS_SPEC_TYPE && !spec.typeUrl.endsWith('/Process')) {
    throw new HullError('invalid_argument', `Exec spec of type "${spec.typeUrl}" is not an OCI Process`);
  }
  try {
    return JSON.parse(Buffer.from(spec?.value ?? new Uint8Array()).toString('utf8')) as OciProcess;
  } catch (e) {
    throw new HullError('invalid_argument', `Malformed exec process spec: ${(e as Error).message}`);
  }
}

/** parseResources reads UpdateTaskRequest.resources: OCI LinuxResources as JSON. */
export function parseResources(resources: { typeUrl: string; value: Uint8Array } | undefined): Record<string, unknown> {
  try {
    return JSON.parse(Buffer.from(resources?.value ?? new Uint8Array()).toString('utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new HullError('invalid_argument', `Malformed resources: ${(e as Error).message}`);
  }
}

/** processInfo is a Pids entry; an exec's carries containerd.runc.v1.ProcessDetails{exec_id}, as runc's shim sends. */
export function processInfo(p: { pid: number; execId: string }) {
  return {
    pid: p.pid,
    info: p.execId ? { typeUrl: 'containerd.runc.v1.ProcessDetails', value: new BinaryWriter().uint32((1 << 3) | 2).string(p.execId).finish() } : undefined,
  };
}

/** readTaskSpec reads and checks the OCI spec containerd wrote in the bundle. */
export async function readTaskSpec(bundle: string): Promise<OciSpec> {
  const specPath = join(bundle, 'config.json');
  const text = await readFile(specPath, 'utf8').catch((e: Error) => {
    throw new HullError('invalid_argument', `Cannot read OCI spec "${specPath}": ${e.message}`);
  });
  return parseSpec(text, specPath);
}

// The Task requests, as the Task service's handlers take them.
export type CreateRequest = { id: string; bundle: string; rootfs: RootfsMount[]; terminal: boolean; stdin: string; stdout: string; stderr: string; options?: { typeUrl: string; value: Uint8Array } };
export type ExecRequest = { id: string; execId: string; terminal: boolean; stdin: string; stdout: string; stderr: string; spec?: { typeUrl: string; value: Uint8Array } };
export type KillRequest = { id: string; execId: string; signal: number; all: boolean };
export type IdRequest = { id: string; execId: string };
export type ResizeRequest = { id: string; execId: string; width: number; height: number };
export type CloseIORequest = { id: string; execId: string; stdin: boolean };

/** callerGone tells whether the connection a request came on closed before it was answered. */
export function callerGone(ctx: CallContext | undefined): boolean {
  return ctx?.signal.aborted === true && isUnavailable(ctx.signal.reason);
}
