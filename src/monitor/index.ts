/**
 * monitor — `hull monitor` and `hull ps`: finding the node's shims, asking them for their
 * sandboxes' status over their read-only status sockets, checking it, and serving it as Prometheus metrics.
 */
export { Monitor, type MonitorOptions, type MonitorServer } from './monitor.js';
export { listSandboxDirs, listStatusSockets, readAll, readStatus, getFromShim, NO_STATUS_SOCKET, SHIM_LIMITS, type SandboxDir, type ShimAnswer, type ShimEndpoint } from './shims.js';
export { bearerCheck, checkListen, isLoopback, readToken, TOKEN_LIMITS } from './auth.js';
export { checkStatus, STATUS_LIMITS } from './status-check.js';
export { sandboxRegistry } from './exposition.js';
