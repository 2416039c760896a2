export { loadConfig, parseConfig, parseListenAddress, DEFAULT_CONFIG, DEFAULT_CONFIG_PATH, type HullConfig } from './config.js';
