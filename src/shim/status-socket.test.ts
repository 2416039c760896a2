import assert from 'node:assert/strict';
import { lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { SandboxStatus } from './sandbox-status.js';
import { prepareStatusDir, serveStatusSocket, statusSocketPath } from './status-socket.js';

const base = mkdtempSync(join(tmpdir(), 'hull-status-socket-'));
after(() => rmSync(base, { recursive: true, force: true }));
const GID = 4242;

function call(socketPath: string, method: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; upgraded: boolean }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path, headers: { host: 'hull', ...headers }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => resolve({ status: res.statusCode!, body, upgraded: false }));
    });
    req.on('upgrade', (res, socket) => (socket.destroy(), resolve({ status: res.statusCode!, body: '', upgraded: true })));
    req.on('error', reject);
    req.end();
  });
}

describe('the status socket', () => {
  it('prepareStatusDir makes the directory root:<gid> 0750, fixes one that is not, refuses a symlink', async () => {
    const dir = join(base, 'status');
    await prepareStatusDir(dir, GID);
    let st = lstatSync(dir);
    assert.deepEqual([st.mode & 0o7777, st.uid, st.gid], [0o750, process.getuid!(), GID]);
    rmSync(dir, { recursive: true });
    mkdirSync(dir, { mode: 0o777 });
    await prepareStatusDir(dir, GID);
    st = lstatSync(dir);
    assert.deepEqual([st.mode & 0o7777, st.gid], [0o750, GID]);
    symlinkSync(dir, join(base, 'link'));
    await assert.rejects(prepareStatusDir(join(base, 'link'), GID), /is not a directory/);
  });

  it('answers GET /status and /metrics only: 405 for other methods, 404 for other paths, no upgrade', async () => {
    const dir = join(base, 'serve');
    await prepareStatusDir(dir, GID);
    const path = statusSocketPath(dir, 'sb1');
    let calls = 0;
    let release = (): void => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    const socket = await serveStatusSocket(path, GID, async (metrics) => {
      calls++;
      await gate;
      return { sandboxId: 'sb1', metrics } as unknown as SandboxStatus;
    }, () => {});
    after(() => socket.close());
    const st = lstatSync(path);
    assert.ok(st.isSocket());
    assert.deepEqual([st.mode & 0o777, st.gid], [0o660, GID]);
    // Three scrapes at once share one status call.
    const three = Promise.all([call(path, 'GET', '/metrics'), call(path, 'GET', '/metrics'), call(path, 'GET', '/metrics')]);
    await new Promise((resolve) => setTimeout(resolve, 50));
    release();
    const answers = await three;
    assert.deepEqual(answers.map((a) => [a.status, JSON.parse(a.body).metrics]), [[200, true], [200, true], [200, true]]);
    assert.equal(calls, 1);
    assert.equal(JSON.parse((await call(path, 'GET', '/status')).body).metrics, false);
    for (const [method, p] of [['POST', '/vm/stop'], ['POST', '/console'], ['GET', '/agent'], ['GET', '/metrics?x=1'], ['GET', '/']] as const) {
      assert.equal((await call(path, method, p)).status, 404, `${method} ${p}`);
    }
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) assert.equal((await call(path, method, '/metrics')).status, 405, method);
    const upgrade = await call(path, 'POST', '/console', { connection: 'Upgrade', upgrade: 'hull-console' }).catch((e: Error) => ({ status: 0, body: e.message, upgraded: false }));
    assert.ok(!upgrade.upgraded);
    await socket.close();
    assert.throws(() => lstatSync(path), /ENOENT/);
  });
});
