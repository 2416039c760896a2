/**
 * The `hull` command. Subcommands: check, env, install, uninstall, run, image build, template, ps,
 * monitor, console, version.
 */
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { HullError } from '../errors/index.js';
import { useHostRuntime } from '../common/host-runtime.js';
import { loadConfig, parseListenAddress } from '../config/index.js';
import { checkListen, Monitor, readToken } from '../monitor/index.js';
import { createLogger } from '../shim/log.js';
import { buildGuestImage, currentGuestImage } from '../guest/index.js';
import { checkHost } from './check.js';
import { listTemplates, pruneTemplates, removeTemplate, type TemplateListing } from '../factory/index.js';
import { envReport, formatEnv } from './env.js';
import { install, installOptions, uninstall } from './install.js';
import { poolStatus, servePool, stopPool } from './pool.js';
import { openConsole } from './console.js';
import { listSandboxes, psJson, psNodeLine, psTable } from './ps.js';
import { nodeMemory } from './node-memory.js';
import { parsePositiveInt, runContainer } from './run.js';

const VERSION = '0.1.0';
const AGENT_BUNDLE = fileURLToPath(new URL('../../agent/hull-agent.js', import.meta.url));

const USAGE = `Usage:
  hull check                      Check that this host can run hull sandboxes
  hull env [--json]               Print the effective configuration (and where each value comes from),
                                  versions and paths
  hull install [--containerd-config PATH] [--bin-dir DIR] [--restart-containerd auto|never]
               [--runtime-name NAME] [--skip-check]
                                  Put hull on this node (idempotent): link containerd-shim-hull-v2 and
                                  hull into DIR (default /usr/local/bin), write the config file if
                                  absent, add runtime NAME (default hull) to containerd's config PATH
                                  (default /etc/containerd/config.toml), restart containerd when that
                                  is known to be safe (auto: systemd is PID 1 and the unit exists),
                                  then run the checks of hull check (unless --skip-check: the
                                  installer image checks the host from the host's mount namespace)
  hull uninstall [same options]   Reverse hull install exactly (idempotent)
  hull image build [--force]      Build the guest image (kernel, initramfs, root disk)
  hull run --bundle DIR [--tty] [--cpus N] [--memory MiB] [--id ID] [-- CMD...]
                                  Run a container from an OCI bundle in a new VM
  hull template ls | rm KEY | prune
                                  List, remove or prune VM templates (saved guests that sandboxes clone)
  hull ps [--json]                List this node's sandboxes: pod, age, state, size, QEMU pid, host PSS,
                                  containers (--json: stable, documented in the README)
  hull monitor [--listen HOST:PORT] [--shim-timeout MS] [--token-file FILE]
                                  Serve Prometheus /metrics for every sandbox of this node (default
                                  monitor_listen, 127.0.0.1:8090; each shim gets MS, default 3000),
                                  read from the shims' status sockets in status_dir. With a token
                                  (FILE, default monitor_token_file) every request must carry it as
                                  "Authorization: Bearer"; without one, loopback addresses only
  hull console SANDBOX [-- CMD...]
                                  As root: a root shell in the guest of sandbox SANDBOX (id or unique id
                                  prefix), outside every container, or run CMD there and exit with its
                                  status. Needs debug_console = true in the config when the pod started
  hull pool serve | status [--json] | stop
                                  The node's pool of warm VMs (pool_size per shape; shims start its
                                  owner on demand): run the owner, show it, or stop it (and its VMs)
  hull version
Options for all commands: --config FILE (default /etc/hull/config.toml)`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'check': {
      const { values } = parseArgs({ args: rest, options: { config: { type: 'string' } } });
      const lines = await checkHost(await loadConfig(values.config));
      for (const line of lines) console.log(`${line.ok ? 'ok  ' : 'FAIL'} ${line.what}: ${line.detail}`);
      return lines.some((l) => l.required && !l.ok) ? 1 : 0;
    }
    case 'env': {
      const { values } = parseArgs({ args: rest, options: { config: { type: 'string' }, json: { type: 'boolean' } } });
      const report = await envReport({ configPath: values.config, hullVersion: VERSION });
      console.log(values.json ? JSON.stringify(report, null, 2) : formatEnv(report));
      return 0;
    }
    case 'install':
    case 'uninstall': {
      const { values } = parseArgs({
        args: rest,
        options: {
          config: { type: 'string' },
          'containerd-config': { type: 'string' },
          'bin-dir': { type: 'string' },
          'restart-containerd': { type: 'string' },
          'runtime-name': { type: 'string' },
          'skip-check': { type: 'boolean' },
        },
      });
      const opts = { ...installOptions(values), check: !(values['skip-check'] ?? false) };
      if (command === 'uninstall') {
        await uninstall(opts);
        return 0;
      }
      return (await install(opts)).ready ? 0 : 1;
    }
    case 'image': {
      const [sub, ...imageArgs] = rest;
      if (sub !== 'build') break;
      const { values } = parseArgs({ args: imageArgs, options: { config: { type: 'string' }, force: { type: 'boolean' } } });
      const config = await loadConfig(values.config);
      const image = await buildGuestImage({ agentBundle: AGENT_BUNDLE, imagesRoot: config.guestImagesDir, force: values.force ?? false, log: (l) => console.error(l) });
      // Templates of other images only hold disk and page cache now: clones still running keep their pages.
      const roots = { templatesRoot: config.templatesDir, ramRoot: config.templateRamDir };
      for (const t of await listTemplates(roots)) {
        if (t.template?.manifest.inputs.imageId !== image.id && (await removeTemplate(t.key, roots))) console.error(`removed template ${t.key} of another image`);
      }
      console.log(`${image.id} ${image.dir}`);
      return 0;
    }
    case 'run': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        options: {
          config: { type: 'string' },
          bundle: { type: 'string' },
          tty: { type: 'boolean', short: 't' },
          cpus: { type: 'string' },
          memory: { type: 'string' },
          id: { type: 'string' },
        },
      });
      if (!values.bundle) throw new HullError('invalid_argument', 'hull run needs --bundle DIR');
      const config = await loadConfig(values.config);
      const image = await currentGuestImage(config.guestImagesDir);
      if (!image) throw new HullError('failed_precondition', `No guest image in ${config.guestImagesDir}: run "hull image build" first`);
      return runContainer(config, image, {
        bundle: values.bundle,
        args: positionals,
        tty: values.tty ?? false,
        vcpus: parsePositiveInt('--cpus', values.cpus),
        memoryMiB: parsePositiveInt('--memory', values.memory),
        id: values.id,
      });
    }
    case 'template': {
      const [sub, ...templateArgs] = rest;
      const { values, positionals } = parseArgs({ args: templateArgs, allowPositionals: true, options: { config: { type: 'string' } } });
      const config = await loadConfig(values.config);
      const roots = { templatesRoot: config.templatesDir, ramRoot: config.templateRamDir };
      if (sub === 'ls') {
        for (const t of await listTemplates(roots)) console.log(templateLine(t));
        return 0;
      }
      if (sub === 'rm' && positionals.length > 0) {
        let missing = 0;
        for (const key of positionals) if (!(await removeTemplate(key, roots))) (missing++, console.error(`hull: no template ${key}`));
        return missing > 0 ? 1 : 0;
      }
      if (sub === 'prune') {
        await pruneTemplates(roots);
        return 0;
      }
      break;
    }
    case 'ps': {
      const { values } = parseArgs({ args: rest, options: { config: { type: 'string' }, json: { type: 'boolean' } } });
      const config = await loadConfig(values.config);
      const sandboxes = await listSandboxes(config.runRoot, config.statusDir);
      const { templateAllocatedBytes, poolMemoryBytes } = await nodeMemory(config);
      const node = { templateAllocatedBytes, poolMemoryBytes };
      console.log(values.json ? psJson(sandboxes, node) : `${psTable(sandboxes)}\n${psNodeLine(node)}`);
      return 0;
    }
    case 'monitor': {
      const { values } = parseArgs({ args: rest, options: { config: { type: 'string' }, listen: { type: 'string' }, 'shim-timeout': { type: 'string' }, 'token-file': { type: 'string' } } });
      const config = await loadConfig(values.config);
      const listen = values.listen ?? config.monitorListen;
      const address = parseListenAddress(listen);
      if (!address) throw new HullError('invalid_argument', `Invalid --listen "${listen}": expected HOST:PORT`);
      const tokenFile = values['token-file'] ?? config.monitorTokenFile;
      const token = tokenFile ? await readToken(tokenFile) : undefined;
      checkListen(address.host, token !== undefined);
      const logger = createLogger((line) => process.stderr.write(line), { component: 'hull-monitor' }, config.logLevel);
      const monitor = new Monitor({ statusDir: config.statusDir, logger, shimTimeoutMs: parsePositiveInt('--shim-timeout', values['shim-timeout']), nodeMemory: () => nodeMemory(config), ...(token !== undefined ? { token } : {}) });
      const server = await monitor.listen(address.host, address.port);
      await new Promise<void>((resolve) => {
        for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => resolve());
      });
      await server.close();
      return 0;
    }
    case 'console': {
      const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { config: { type: 'string' } } });
      const [sandbox, ...args] = positionals;
      if (!sandbox) throw new HullError('invalid_argument', 'hull console needs a sandbox id (hull ps lists them)');
      return openConsole((await loadConfig(values.config)).runRoot, sandbox, args);
    }
    case 'pool': {
      const [sub, ...poolArgs] = rest;
      const { values } = parseArgs({ args: poolArgs, options: { config: { type: 'string' }, json: { type: 'boolean' } } });
      const config = await loadConfig(values.config);
      if (sub === 'serve') return servePool(config, values.config);
      if (sub === 'status') return poolStatus(config, values.json ?? false);
      if (sub === 'stop') return (await stopPool(config), 0);
      break;
    }
    case 'version':
    case '--version':
      console.log(`hull ${VERSION}`);
      return 0;
    case undefined:
    case 'help':
    case '--help':
      console.log(USAGE);
      return command === undefined ? 2 : 0;
  }
  console.error(`hull: unknown command "${argv.join(' ')}"\n${USAGE}`);
  return 2;
}

// The programs hull brought (the installer image's runtime) come first, as for the shim.
useHostRuntime();
main(process.argv.slice(2)).then(
  (code) => (process.exitCode = code),
  (e: unknown) => {
    console.error(`hull: ${(e as Error).message}`);
    process.exitCode = e instanceof HullError && e.code === 'invalid_argument' ? 2 : 125;
  },
);

function templateLine(t: TemplateListing): string {
  const ram = `${Math.round(t.ramAllocatedBytes / (1024 * 1024))} MiB RAM allocated`;
  if (!t.template) return `${t.key}  unusable: ${t.problem ?? 'unknown'} (${ram})`;
  const { inputs, createdAt } = t.template.manifest;
  return `${t.key}  image ${inputs.imageId}  ${inputs.vcpus} vCPU ${inputs.memoryMiB} MiB ${inputs.accel}  ${ram}  created ${createdAt}`;
}
