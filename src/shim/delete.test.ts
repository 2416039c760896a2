import assert from 'node:assert/strict';
import { test } from 'node:test';
import { create, toBinary } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { DeleteResponseSchema } from '../proto/gen/task_pb.js';
import { deleteResponse } from './delete.js';

test('deleteResponse writes the bytes toBinary writes for a DeleteResponse', () => {
  for (const [pid, exitStatus, ms] of [
    [0, 137, 1_765_000_123_456],
    [4242, 0, 1_765_000_123_000],
    [1, 255, 999],
    [0, 0, 0],
    [2 ** 31, 137, 4_102_444_800_001],
  ] as const) {
    const expected = toBinary(DeleteResponseSchema, create(DeleteResponseSchema, { pid, exitStatus, exitedAt: timestampFromMs(ms) }));
    assert.deepEqual(deleteResponse(pid, exitStatus, ms), expected, `pid ${pid}, exit ${exitStatus}, ${ms} ms`);
  }
});
