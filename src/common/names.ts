/**
 * The names host and guest agree on, defined once: the agent's virtio-serial port, the 9p share's
 * mount tag, and the guest paths the host writes into specs and the agent creates.
 */

/** AGENT_PORT_NAME is the virtio-serial port the agent opens (/dev/virtio-ports/hull.agent). */
export const AGENT_PORT_NAME = 'hull.agent';
/** SHARE_TAG is the virtio-9p mount tag of the sandbox's shared directory. */
export const SHARE_TAG = 'hull';
/** GUEST_SHARED_DIR is where the agent mounts the 9p share (container rootfs and volumes). */
export const GUEST_SHARED_DIR = '/run/hull/shared';
/** GUEST_CONTAINERS_DIR holds the agent's bundle directory of each container. */
export const GUEST_CONTAINERS_DIR = '/run/hull/containers';
/**
 * Pod-wide tmpfs (a memory emptyDir): the host marks such a tmpfs mount with a source of
 * POD_TMPFS_PREFIX + key; the agent mounts one tmpfs per key under GUEST_POD_TMPFS_DIR and binds it
 * into every container naming it, so the pod's containers share it as on any node.
 */
export const POD_TMPFS_PREFIX = 'hull-pod-tmpfs:';
export const GUEST_POD_TMPFS_DIR = '/run/hull/pod-tmpfs';
/** GUEST_SHM_DIR is the guest's own /dev/shm tmpfs, which every container of the pod may bind. */
export const GUEST_SHM_DIR = '/dev/shm';
/** GUEST_MODULES_DIR holds the guest kernel's on-demand modules (src/guest/on-demand.ts). */
export const GUEST_MODULES_DIR = '/lib/modules';
