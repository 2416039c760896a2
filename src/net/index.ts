/**
 * net — the pod network seen from the host: what CNI configured in the pod's
 * netns, the tap + tc redirect that hands it to the VM, and the guard that
 * lets only the pod's own MAC and addresses out of it.
 */
export { readPodNetwork, type PodNetwork, type PodInterface, type PodAddress, type PodRoute } from './pod-network.js';
export { connectTap, createTap, disconnectTap, removeTap, takeOverTap, TAP_NAME } from './tap.js';
export { guardRuleset, type PodIdentity } from './anti-spoof.js';
export { enablePortForward, disablePortForward, LINK_ADDRESS, type PortForwardPlumbing } from './port-forward.js';
