import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { latestOnly } from './latest-only.js';

describe('latest-only work', () => {
  it('apply one at a time: a burst costs the first and the last, in order', async () => {
    const applied: number[] = [];
    let inFlight = 0;
    let most = 0;
    const resize = latestOnly(async (n: number) => {
      inFlight++;
      most = Math.max(most, inFlight);
      await sleep(20);
      applied.push(n);
      inFlight--;
    });
    for (let n = 1; n <= 50; n++) resize(n);
    for (let i = 0; i < 100 && applied.at(-1) !== 50; i++) await sleep(10);
    assert.deepEqual(applied, [1, 50]);
    assert.equal(most, 1);
    resize(51);
    for (let i = 0; i < 100 && applied.at(-1) !== 51; i++) await sleep(10);
    assert.deepEqual(applied, [1, 50, 51]);
  });

  it('go on after one fails', async () => {
    const applied: number[] = [];
    const resize = latestOnly(async (n: number) => {
      if (n === 1) throw new Error('agent said no');
      applied.push(n);
    });
    resize(1);
    resize(2);
    for (let i = 0; i < 100 && applied.length === 0; i++) await sleep(10);
    assert.deepEqual(applied, [2]);
  });
});
