import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, truncateSync, writeFileSync, } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { homeOf, readContainerEtc, MAX_ETC_FILE_BYTES } from './container-etc.js';

// A "container": a process chrooted into a directory of its own, as the agent sees a container's init.
const root = mkdtempSync(join(tmpdir(), 'hull-etc-'));
const etc = join(root, 'etc');
const passwd = join(etc, 'passwd');
let init: ChildProcess;

before(async () => {
  mkdirSync(join(root, 'bin'));
  mkdirSync(etc);
  copyFileSync('/bin/busybox', join(root, 'bin', 'busybox'));
  init = spawn('chroot', [root, '/bin/busybox', 'sleep', '1000'], { stdio: 'ignore' });
  // chroot execs busybox: wait until the process's root is the directory.
  for (;;) {
    try {
      if (execFileSync('readlink', [`/proc/${init.pid}/root`], { encoding: 'utf8' }).trim() === root) break;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 10));
  }
});

after(() => {
  init?.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
});

const reset = () => {
  rmSync(etc, { recursive: true, force: true });
  mkdirSync(etc);
};

test('readContainerEtc reads the container\'s own file, again only once it changed', () => {
  reset();
  writeFileSync(passwd, 'root:x:0:0:root:/home/in-container:/bin/sh\n');
  const first = readContainerEtc(init.pid!, 'passwd');
  assert.equal(homeOf(first!.text, 0), '/home/in-container');
  assert.equal(readContainerEtc(init.pid!, 'passwd', first!), first);
  writeFileSync(passwd, 'root:x:0:0:root:/home/changed:/bin/sh\n');
  assert.equal(homeOf(readContainerEtc(init.pid!, 'passwd', first!)!.text, 0), '/home/changed');
  assert.equal(homeOf('a:x:1:1::/a:/bin/sh\n', 0), null);
});

test('readContainerEtc answers null when /etc or the file is missing', () => {
  reset();
  assert.equal(readContainerEtc(init.pid!, 'passwd'), null);
  rmSync(etc, { recursive: true });
  assert.equal(readContainerEtc(init.pid!, 'passwd'), null);
});

test('readContainerEtc follows no symlink, climbs no `..` and refuses FIFOs, directories and large files', () => {
  const refused = (what: RegExp) => assert.throws(() => readContainerEtc(init.pid!, 'passwd'), what);
  // The host's own files are what a followed link would reach (the agent's root here, the guest's there).
  reset();
  symlinkSync('/proc/1/environ', passwd);
  refused(/Cannot read the container's \/etc\/passwd: the container's \/etc\/passwd is a symbolic link$/);
  reset();
  symlinkSync('../../../../../../etc/passwd', passwd);
  refused(/\/etc\/passwd is a symbolic link/);
  rmSync(etc, { recursive: true });
  symlinkSync('../../../../../../etc', etc);
  refused(/the container's \/etc is a symbolic link/);
  rmSync(etc);
  writeFileSync(etc, '');
  refused(/the container's \/etc is not a directory/);
  rmSync(etc);
  mkdirSync(etc);
  execFileSync('mkfifo', [passwd]);
  refused(/\/etc\/passwd is not a regular file/); // and returns at once: nothing opens the FIFO's other end
  reset();
  mkdirSync(passwd);
  refused(/\/etc\/passwd is not a regular file/);
  reset();
  writeFileSync(passwd, '');
  truncateSync(passwd, 1024 ** 3);
  refused(new RegExp(`/etc/passwd is larger than ${MAX_ETC_FILE_BYTES} bytes`));
});
