import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { LIMITS, checkString } from './agent-client.js';

test('checkString refuses an oversized guest string and cleans control characters from the rest', () => {
  assert.throws(() => checkString('command', 'x'.repeat(LIMITS.maxString + 1)), /Guest sent a command of 4097 characters/);
  assert.equal(checkString('command', 'sleep 1000'), 'sleep 1000');
  assert.equal(checkString('command', '\x1b]0;owned\x07sh\0'), '\ufffd]0;owned\ufffdsh\ufffd');
  const long = '日'.repeat(LIMITS.maxString);
  assert.equal(checkString('kernel release', long), long);
});
