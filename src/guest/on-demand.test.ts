import { test } from 'node:test';
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fakeModule } from './testing.js';
import { indexModules } from './modules.js';
import { modulesAlias, modulesDep, resolveOnDemand } from './on-demand.js';

test('modulesDep() lists every module a module needs, each after the ones that need it', () => {
  const deps: Record<string, string[]> = { br_netfilter: ['bridge'], bridge: ['stp', 'llc'], stp: ['llc'], llc: [], ipv6: [] };
  const path = (n: string): string => `kernel/net/${n}.ko`;
  const text = modulesDep(['br_netfilter', 'bridge', 'llc'].map((name) => ({ name, relPath: path(name) })), (n) => deps[n], path);
  assert.equal(
    text,
    'kernel/net/br_netfilter.ko: kernel/net/bridge.ko kernel/net/stp.ko kernel/net/llc.ko\n' +
      'kernel/net/bridge.ko: kernel/net/stp.ko kernel/net/llc.ko\n' +
      'kernel/net/llc.ko:\n',
  );
  // Built-in modules are no one's dependency.
  assert.equal(modulesDep([{ name: 'bridge', relPath: path('bridge') }], (n) => deps[n], path, (n) => n === 'stp'), 'kernel/net/bridge.ko: kernel/net/llc.ko\n');
});

test('modulesAlias() writes one line per alias', () => {
  assert.equal(
    modulesAlias([
      { name: 'bridge', aliases: ['rtnl-link-bridge'] },
      { name: 'fuse', aliases: ['fs-fuse', 'char-major-10-229', 'bad alias'] },
    ]),
    '# Aliases extracted from modules themselves.\nalias rtnl-link-bridge bridge\nalias fs-fuse fuse\nalias char-major-10-229 fuse\n',
  );
});

test('resolveOnDemand() takes named modules, whole directories and their closure, not the boot modules', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'hull-ondemand-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const release = '6.1.0-99-amd64';
  const put = async (rel: string, modinfo: string[]): Promise<void> => {
    await mkdir(dirname(join(root, rel)), { recursive: true });
    await writeFile(join(root, rel), fakeModule([...modinfo, `vermagic=${release} SMP mod_unload`]));
  };
  await put('kernel/net/bridge/bridge.ko', ['depends=stp,llc', 'alias=rtnl-link-bridge']);
  await put('kernel/net/802/stp.ko', ['depends=llc']);
  await put('kernel/net/llc/llc.ko', ['depends=']);
  await put('kernel/net/netfilter/nft_masq.ko', ['depends=nf_nat', 'alias=nft-expr-masq']);
  await put('kernel/net/netfilter/nf_nat.ko', ['depends=libcrc32c']);
  await put('kernel/lib/libcrc32c.ko', ['depends=']);
  await put('kernel/fs/overlayfs/overlay.ko', ['depends=', 'alias=fs-overlay']);
  await put('kernel/fs/unrelated.ko', ['depends=']);

  const index = await indexModules(root, release);
  const set = await resolveOnDemand(index, ['bridge', 'overlay'], ['kernel/net/netfilter'], new Set(['overlay', 'libcrc32c']));
  assert.deepEqual(
    set.modules.map((m) => m.relPath),
    ['kernel/net/802/stp.ko', 'kernel/net/bridge/bridge.ko', 'kernel/net/llc/llc.ko', 'kernel/net/netfilter/nf_nat.ko', 'kernel/net/netfilter/nft_masq.ko'],
  );
  // A boot module is not copied but stays a dependency (modprobe skips it as loaded).
  assert.match(set.modulesDep, /^kernel\/net\/netfilter\/nft_masq.ko: kernel\/net\/netfilter\/nf_nat.ko kernel\/lib\/libcrc32c.ko$/m);
  assert.match(set.modulesAlias, /^alias rtnl-link-bridge bridge$/m);
  assert.doesNotMatch(set.modulesAlias, /fs-overlay/);

  await assert.rejects(resolveOnDemand(index, ['bridge', 'nothere', 'gone'], [], new Set()), /Cannot find kernel modules "nothere", "gone"/);
});
