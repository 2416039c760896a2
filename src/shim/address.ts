/**
 * Where a pod's shim listens. containerd's own rule (shim.SocketAddress):
 * unix:///run/containerd/s/<sha256(containerd address + "/" + namespace + "/" + group id)>,
 * so every container of one pod finds the same shim, and a restarted
 * containerd finds it again through the bundle's `address` file.
 */
import { createHash } from 'node:crypto';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const SHIM_SOCKET_DIR = '/run/containerd/s';

export function shimSocketPath(containerdAddress: string, namespace: string, groupId: string): string {
  const hash = createHash('sha256').update(join(containerdAddress, namespace, groupId)).digest('hex');
  return join(SHIM_SOCKET_DIR, hash);
}

/** writeAddressFile writes `<bundle>/address` atomically. */
export async function writeAddressFile(bundle: string, address: string): Promise<void> {
  const tmp = join(bundle, '.address');
  await writeFile(tmp, address);
  await rename(tmp, join(bundle, 'address'));
}

export const CRI_CONTAINER_TYPE = 'io.kubernetes.cri.container-type';
export const CRI_SANDBOX_ID = 'io.kubernetes.cri.sandbox-id';

/** groupId is the sandbox id for a pod's containers, else the container's own id. */
export function groupId(id: string, annotations: Record<string, string> | undefined): string {
  if (annotations?.[CRI_CONTAINER_TYPE] === 'container' && annotations[CRI_SANDBOX_ID]) return annotations[CRI_SANDBOX_ID];
  return id;
}
