import assert from 'node:assert/strict';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { errorCode } from '../errors/index.js';
import { ensurePrivateDir } from './template-dirs.js';

const root = mkdtempSync(join(tmpdir(), 'hull-tpl-dirs-'));
after(() => rmSync(root, { recursive: true, force: true }));
const IS_ROOT = process.getuid?.() === 0;

const mode = (path: string) => statSync(path).mode & 0o7777;
const refused = (pattern: RegExp) => (error: unknown) => {
  assert.equal(errorCode(error), 'failed_precondition');
  assert.match((error as Error).message, pattern);
  return true;
};

describe('ensurePrivateDir()', () => {
  it('makes a missing directory, with its parents, mode 0700', async () => {
    const dir = join(root, 'made', 'ram');
    await ensurePrivateDir(dir, 'template RAM directory');
    assert.equal(mode(dir), 0o700);
    await ensurePrivateDir(dir, 'template RAM directory'); // and accepts it next time
  });

  it('tightens a directory of ours that nobody else can write (mkdir with umask 022)', async () => {
    const dir = join(root, 'loose');
    mkdirSync(dir);
    chmodSync(dir, 0o755);
    await ensurePrivateDir(dir, 'template RAM directory');
    assert.equal(mode(dir), 0o700);
  });

  it('refuses a directory of ours that others could write in, and leaves it as it is', async () => {
    for (const [name, bits, who] of [['world', 0o777, 'anyone'], ['sticky', 0o1777, 'anyone'], ['group', 0o770, 'its group']] as const) {
      const dir = join(root, name);
      mkdirSync(dir);
      chmodSync(dir, bits);
      await assert.rejects(ensurePrivateDir(dir, 'template RAM directory'), refused(new RegExp(`Refusing the template RAM directory "${dir}": its mode ${bits.toString(8).padStart(4, '0')} lets ${who} write in it`)));
      assert.equal(mode(dir), bits);
    }
  });

  it('refuses a directory another uid made first, whatever its mode', { skip: IS_ROOT ? false : 'chown needs root' }, async () => {
    const dir = join(root, 'theirs');
    mkdirSync(dir, { mode: 0o700 });
    chownSync(dir, 65534, 65534);
    await assert.rejects(ensurePrivateDir(dir, 'template RAM directory'), refused(/it is owned by uid 65534, not uid 0 \(root\); someone else may own or read the memory of pods\. Remove it/));
    assert.equal(statSync(dir).uid, 65534);
  });

  it('refuses a symlink (even to a good directory) and a file', async () => {
    const good = join(root, 'good');
    mkdirSync(good, { mode: 0o700 });
    const link = join(root, 'link');
    symlinkSync(good, link);
    await assert.rejects(ensurePrivateDir(link, 'template RAM directory'), refused(/it is a symlink, not a directory/));
    const file = join(root, 'file');
    writeFileSync(file, '');
    await assert.rejects(ensurePrivateDir(file, 'templates directory'), refused(/Refusing the templates directory ".*file": it is not a directory/));
  });
});
