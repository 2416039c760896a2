import { test } from 'node:test';
import { strict as assert } from 'node:assert';
import { existsSync } from 'node:fs';
import { hasInterpreter, parseLdd, sharedLibraries } from './host-files.js';

const LDD_NODE = `	linux-vdso.so.1 (0x00007ffd4f1f5000)
	libdl.so.2 => /lib/x86_64-linux-gnu/libdl.so.2 (0x00007f0f6a0b9000)
	libstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f0f69e00000)
	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0f69c1e000)
	/lib64/ld-linux-x86-64.so.2 (0x00007f0f6a0d2000)
`;

test('parseLdd() keeps library paths as ldd names them, loader included', () => {
  assert.deepEqual(parseLdd(LDD_NODE, 'node'), [
    '/lib/x86_64-linux-gnu/libdl.so.2',
    '/lib/x86_64-linux-gnu/libstdc++.so.6',
    '/lib/x86_64-linux-gnu/libc.so.6',
    '/lib64/ld-linux-x86-64.so.2',
  ]);
  assert.deepEqual(parseLdd('\tstatically linked\n', 'x'), []);
});

test('parseLdd() fails on a library that is not found', () => {
  assert.throws(() => parseLdd('\tlibyajl.so.2 => not found\n', '/usr/bin/crun'), /Cannot copy \/usr\/bin\/crun into the guest: library libyajl.so.2 not found/);
});

test('hasInterpreter() tells static busybox from dynamic node', { skip: !(existsSync('/bin/busybox') && existsSync('/usr/bin/node')) && 'needs /bin/busybox and /usr/bin/node' }, async () => {
  assert.equal(await hasInterpreter(process.execPath), true);
  // The machine's /bin/busybox is busybox-static's.
  assert.equal(await hasInterpreter('/bin/busybox'), false);
});

test('sharedLibraries() of node includes libc and the loader', { skip: !existsSync('/usr/bin/ldd') && 'no ldd' }, async () => {
  const libs = await sharedLibraries(process.execPath);
  assert.ok(libs.some((l) => /\/libc\.so\.6$/.test(l)), libs.join(' '));
  assert.ok(libs.some((l) => /ld-linux-x86-64\.so\.2$/.test(l)), libs.join(' '));
});
