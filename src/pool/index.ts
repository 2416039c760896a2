/**
 * pool — warm VMs for fast pod starts: the node's owner of the pool (`hull pool serve`, owner.ts),
 * the warm-up each VM runs before it is lent (warm-up.ts), and the client a shim claims one with
 * (client.ts); the adoption itself is the Sandbox's (src/sandbox/pool-adopt.ts).
 */
export { PoolClient, startOwner, type PoolClientOptions } from './client.js';
export { PoolOwner, POOL_CGROUP, WARM_CONTAINER_IDS, poolCgroup, shapeKey, type PoolOwnerOptions } from './owner.js';
export { POOL_SOCKET, type PoolStatus } from './protocol.js';
