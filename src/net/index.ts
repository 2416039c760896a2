/**
 * net — the pod network seen from the host: what CNI configured in the pod's
 * netns, and the tap + tc redirect that hands it to the VM.
 */
export { readPodNetwork, type PodNetwork, type PodInterface, type PodAddress, type PodRoute } from './pod-network.js';
export { connectTap, disconnectTap, TAP_NAME } from './tap.js';
export { enablePortForward, disablePortForward, LINK_ADDRESS, type PortForwardPlumbing } from './port-forward.js';
