/**
 * `make oci-image`: writes the installer image (installer-image.ts) as an OCI archive into dist/oci/
 * (or --out DIR) and prints how to load it into a node's containerd.
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { buildInstallerImage } from './installer-image.js';

function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}

const { values } = parseArgs({ args: process.argv.slice(2), options: { out: { type: 'string' } } });
const repo = repoRoot();
try {
  const image = await buildInstallerImage({ repo, outDir: resolve(values.out ?? join(repo, 'dist', 'oci')) });
  console.log(`${image.ref}\n${image.tarPath}\n${image.manifestDigest}`);
  console.error(`load it on each node: ctr -n k8s.io images import ${image.tarPath}`);
} catch (e) {
  console.error(`make oci-image: ${(e as Error).message}`);
  process.exitCode = 1;
}
