import { strict as assert } from 'node:assert';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { DEFAULT_CONFIG } from '../config/index.js';
import { errorCode } from '../errors/index.js';
import type { EventPublisher } from './events.js';
import { TaskService } from './task-service.js';

// What needs no VM: a pod whose boot fails (no guest image here), and requests on unknown tasks.
const dir = mkdtempSync(join(tmpdir(), 'hull-task-service-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function service(): { tasks: TaskService; topics: string[] } {
  const topics: string[] = [];
  const events = { publish: (topic: string) => void topics.push(topic) } as unknown as EventPublisher;
  const config = { ...DEFAULT_CONFIG, guestImagesDir: join(dir, 'no-images'), runRoot: join(dir, 'run'), templates: false };
  return { tasks: new TaskService({ config, events, log: () => {}, onIdle: () => {} }), topics };
}

function createRequest(id: string) {
  const bundle = join(dir, id);
  mkdirSync(bundle, { recursive: true });
  writeFileSync(join(bundle, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', process: { args: ['true'], cwd: '/' }, root: { path: 'rootfs' } }));
  return { id, bundle, rootfs: [], terminal: false, stdin: '', stdout: '', stderr: '' };
}

test('of two Creates racing before the VM is up, only the first boots it; the second fails naming that boot', async () => {
  const { tasks, topics } = service();
  const [first, second] = await Promise.allSettled([tasks.create(createRequest('pod')), tasks.create(createRequest('app'))]);
  assert.equal(first.status, 'rejected');
  assert.equal(second.status, 'rejected');
  const [e1, e2] = [(first as PromiseRejectedResult).reason as Error, (second as PromiseRejectedResult).reason as Error];
  assert.equal(errorCode(e1), 'failed_precondition');
  assert.match(e1.message, /No hull guest image in /);
  assert.equal(errorCode(e2), 'failed_precondition');
  assert.match(e2.message, /^No pod VM to join: the Create of task "pod", which was starting it, failed: No hull guest image in /, 'the second did not boot a VM of its own');
  assert.deepEqual(topics, [], 'no task was created');
  // Nothing is left claimed: the next Create tries to boot again.
  await assert.rejects(tasks.create(createRequest('again')), /No hull guest image in /);
});

test('requests on a task or exec the shim does not know are NotFound', async () => {
  const { tasks } = service();
  for (const call of [
    () => tasks.state({ id: 'nope', execId: '' }),
    () => tasks.start({ id: 'nope', execId: '' }),
    () => tasks.kill({ id: 'nope', execId: '', signal: 9, all: false }),
    () => tasks.delete({ id: 'nope', execId: 'e1' }),
    () => tasks.pause({ id: 'nope' }),
  ]) {
    await assert.rejects(call(), (e: Error) => errorCode(e) === 'not_found' && /Task "nope" not found/.test(e.message));
  }
});
