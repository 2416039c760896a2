// Run by scripts/bundle.mjs as `node --snapshot-blob OUT --build-snapshot scripts/shim-snapshot.cjs BUNDLE`:
// runs BUNDLE (the CommonJS bundle of src/shim/daemon-snapshot.ts) with a require() that hands out
// each built-in module only when the bundle first touches it. A module the bundle's top level does
// not use is therefore loaded when the daemon runs, never captured in the snapshot: node 20 warns
// that several (child_process, net, http…) may not survive one, and any such warning fails the build.
'use strict';
const { readFileSync } = require('node:fs');
const { dirname, resolve } = require('node:path');

// While the snapshot is built, a warning fails it. The listener must not be in the snapshot: the
// daemon would then exit on any warning it prints at run time (e.g. MaxListenersExceeded).
const failOnWarning = (w) => {
  process.stderr.write(`shim snapshot: ${w.message}\n`);
  process.exit(1);
};
process.on('warning', failOnWarning);
require('node:v8').startupSnapshot.addSerializeCallback(() => process.off('warning', failOnWarning));

function lazyBuiltin(name) {
  let loaded;
  const real = () => (loaded ??= require(name));
  return new Proxy(Object.create(null), {
    get: (_, key) => real()[key],
    has: (_, key) => key in real(),
    ownKeys: () => Reflect.ownKeys(real()),
    getOwnPropertyDescriptor: (_, key) => {
      const d = Reflect.getOwnPropertyDescriptor(real(), key);
      return d && { ...d, configurable: true };
    },
  });
}

const bundle = resolve(process.argv[2]);
const bundleRequire = (name) => {
  if (!name.startsWith('node:')) throw new Error(`The shim snapshot's bundle requires "${name}": only built-in modules can be required in it`);
  return lazyBuiltin(name);
};
const mod = { exports: {} };
new Function('exports', 'require', 'module', '__filename', '__dirname', `${readFileSync(bundle, 'utf8')}\n//# sourceURL=${bundle}`)(mod.exports, bundleRequire, mod, bundle, dirname(bundle));
