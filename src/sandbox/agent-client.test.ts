import { strict as assert } from 'node:assert';
import { describe, it, test } from 'node:test';
import { LIMITS, checkString, resendUnanswered } from './agent-client.js';
import { HullError } from '../errors/index.js';

test('checkString refuses an oversized guest string and cleans control characters from the rest', () => {
  assert.throws(() => checkString('command', 'x'.repeat(LIMITS.maxString + 1)), /Guest sent a command of 4097 characters/);
  assert.equal(checkString('command', 'sleep 1000'), 'sleep 1000');
  assert.equal(checkString('command', '\x1b]0;owned\x07sh\0'), '\ufffd]0;owned\ufffdsh\ufffd');
  const long = '日'.repeat(LIMITS.maxString);
  assert.equal(checkString('kernel release', long), long);
});

describe('resendUnanswered', () => {
  const timedOut = () => new HullError('deadline_exceeded', 'ttrpc: call: context deadline exceeded');

  it('sends again what went unanswered, each attempt bounded, until an answer', async () => {
    const timeouts: number[] = [];
    let calls = 0;
    const answer = await resendUnanswered(async (timeoutMs) => {
      timeouts.push(timeoutMs);
      if (++calls < 3) throw timedOut();
      return 'answered';
    }, Date.now() + 60_000);
    assert.equal(answer, 'answered');
    assert.equal(calls, 3);
    assert.ok(timeouts.every((t) => t > 0 && t <= 2_500), JSON.stringify(timeouts));
  });

  it('gives up at the deadline, and at once on any other error', async () => {
    await assert.rejects(resendUnanswered(async () => { throw timedOut(); }, Date.now() + 50), /deadline exceeded/);
    let calls = 0;
    await assert.rejects(resendUnanswered(async () => { calls++; throw new HullError('invalid_argument', 'bad MAC'); }, Date.now() + 60_000), /bad MAC/);
    assert.equal(calls, 1);
  });
});
