export { loadConfig, parseConfig, DEFAULT_CONFIG, DEFAULT_CONFIG_PATH, type HullConfig } from './config.js';
