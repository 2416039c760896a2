/**
 * The shim's command line, as containerd writes it (Go flag style):
 *   containerd-shim-hull-v2 -namespace NS -address ADDR -publish-binary BIN -id ID [-bundle DIR] [-debug] [start|delete]
 */
import { HullError } from '../errors/index.js';

export interface ShimFlags {
  namespace: string;
  address: string;
  publishBinary: string;
  id: string;
  bundle: string;
  socket: string;
  debug: boolean;
  action: 'start' | 'delete' | 'serve';
}

const VALUE_FLAGS: Record<string, keyof ShimFlags> = {
  namespace: 'namespace',
  address: 'address',
  'publish-binary': 'publishBinary',
  id: 'id',
  bundle: 'bundle',
  socket: 'socket',
};

export function parseShimFlags(argv: string[]): ShimFlags {
  const flags: ShimFlags = { namespace: '', address: '', publishBinary: '', id: '', bundle: '', socket: '', debug: false, action: 'serve' };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('-')) {
      if (arg !== 'start' && arg !== 'delete') throw new HullError('invalid_argument', `Unknown shim action "${arg}"`);
      flags.action = arg;
      continue;
    }
    const body = arg.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq >= 0 ? body.slice(0, eq) : body;
    if (name === 'debug' || name === 'v') {
      flags.debug = eq < 0 || body.slice(eq + 1) !== 'false';
      continue;
    }
    const field = VALUE_FLAGS[name];
    if (!field) throw new HullError('invalid_argument', `Unknown shim flag "${arg}"`);
    const value = eq >= 0 ? body.slice(eq + 1) : argv[++i];
    if (value === undefined) throw new HullError('invalid_argument', `Shim flag "${arg}" needs a value`);
    (flags as unknown as Record<string, string>)[field] = value;
  }
  if (!flags.id) throw new HullError('invalid_argument', 'Shim needs -id');
  if (flags.action !== 'delete' && !flags.namespace) throw new HullError('invalid_argument', 'Shim needs -namespace');
  return flags;
}
