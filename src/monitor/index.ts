/**
 * monitor — `hull monitor` and `hull ps`: finding the node's shims, asking them for their
 * sandboxes' status over their debug sockets, checking it, and serving it as Prometheus metrics.
 */
export { Monitor, type MonitorOptions, type MonitorServer } from './monitor.js';
export { listSandboxDirs, readAll, readStatus, getFromShim, SHIM_LIMITS, type SandboxDir, type ShimAnswer } from './shims.js';
export { checkStatus, STATUS_LIMITS } from './status-check.js';
export { sandboxRegistry } from './exposition.js';
