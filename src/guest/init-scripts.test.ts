import { test } from 'node:test';
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { INITRAMFS_APPLETS, INITRAMFS_INIT, ROOT_INIT } from './init-scripts.js';

const haveBusybox = existsSync('/bin/busybox');

test('init scripts parse as busybox sh', { skip: !haveBusybox && 'no /bin/busybox' }, () => {
  for (const script of [INITRAMFS_INIT, ROOT_INIT]) {
    execFileSync('/bin/busybox', ['sh', '-n'], { input: script, stdio: ['pipe', 'pipe', 'pipe'] });
  }
});

test('the initramfs script calls only the applets that get a link', { skip: !haveBusybox && 'no /bin/busybox' }, () => {
  const applets = new Set(execFileSync('/bin/busybox', ['--list']).toString().split('\n'));
  const code = INITRAMFS_INIT.split('\n').filter((l) => !l.trim().startsWith('#')).join('\n');
  for (const m of code.matchAll(/(?<![\w/.-])([a-z_]+)(?![\w/.-])/g)) {
    if (applets.has(m[1]!)) assert.ok(INITRAMFS_APPLETS.includes(m[1]!), `initramfs /init uses ${m[1]} without a link`);
  }
});

test('the root init runs the agent under a restart loop with a clean environment', () => {
  assert.match(ROOT_INIT, /while true; do\n\s+\/usr\/bin\/node --jitless --no-memory-reducer \/hull\/agent\.js\n\s+log "agent exited \(\$\?\), restarting"\n\s+sleep 1\n\s*done/);
  assert.match(ROOT_INIT, /unset NODE_OPTIONS/);
  assert.match(ROOT_INIT, /export PATH=\/usr\/bin:\/bin:\/usr\/sbin:\/sbin/);
  assert.match(ROOT_INIT, /export HOME=\/root/);
  for (const c of ['cpu', 'cpuset', 'memory', 'pids', 'io']) assert.match(ROOT_INIT, new RegExp(`for c in [a-z ]*\\b${c}\\b`));
});

test('the root init turns hull.* kernel parameters into HULL_* variables', { skip: !haveBusybox && 'no /bin/busybox' }, () => {
  // Run just the parameter loop, with a fake command line in place of /proc/cmdline.
  const loop = /for arg in \$\(cat \/proc\/cmdline\); do\n(?:.*\n)*?done\n/.exec(ROOT_INIT.slice(ROOT_INIT.indexOf('hostname -F')))?.[0];
  assert.ok(loop !== undefined);
  const script = `log() { echo "log: $*"; }\n${loop.replace('$(cat /proc/cmdline)', '$CMDLINE')}env | grep ^HULL_ | sort\n`;
  const out = execFileSync('/bin/busybox', ['sh', '-c', script], {
    env: { PATH: '/bin:/usr/bin', CMDLINE: 'console=ttyS0 hull.root=/dev/vdb hull.agent-port=hull.agent quiet hull.bad$x=1 hullx=2' },
  }).toString();
  assert.equal(out, 'log: ignoring kernel parameter hull.bad$x\nHULL_AGENT_PORT=hull.agent\nHULL_ROOT=/dev/vdb\n');
});
