import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { AgentEntropy, agentRandomBytes } from './entropy.js';

/** cloned is a stand-in for OpenSSL's generator in two clones of one template: the same stream in each. */
function cloned(): (size: number) => Buffer {
  let n = 0;
  return (size) => {
    const out = Buffer.alloc(size);
    for (let offset = 0; offset < size; offset += 32) createHash('sha256').update(`block ${n++}`).digest().copy(out, offset);
    return out;
  };
}

describe('AgentEntropy', () => {
  it('gives two clones of one state the same output until they are reseeded (the problem)', () => {
    const a = new AgentEntropy(cloned());
    const b = new AgentEntropy(cloned());
    assert.deepEqual(a.randomBytes(48), b.randomBytes(48));
  });

  it('makes clones differ once each is reseeded with its own host entropy', () => {
    const a = new AgentEntropy(cloned());
    const b = new AgentEntropy(cloned());
    a.reseed(Buffer.from('host entropy of clone a'));
    b.reseed(Buffer.from('host entropy of clone b'));
    assert.notDeepEqual(a.randomBytes(32), b.randomBytes(32));
  });

  it('keeps each reseed input apart: shifting bytes from one input to the next changes the key', () => {
    const a = new AgentEntropy(cloned());
    const b = new AgentEntropy(cloned());
    a.reseed(Buffer.from('ab'), Buffer.from('c'));
    b.reseed(Buffer.from('a'), Buffer.from('bc'));
    assert.notDeepEqual(a.randomBytes(32), b.randomBytes(32));
  });

  it('never repeats output and serves any length up to its bound', () => {
    const e = new AgentEntropy(cloned());
    const first = e.randomBytes(32);
    assert.notDeepEqual(e.randomBytes(32), first);
    assert.equal(e.randomBytes(0).length, 0);
    assert.equal(e.randomBytes(33).length, 33);
    assert.equal(agentRandomBytes(100).length, 100);
    assert.throws(() => e.randomBytes(-1), RangeError);
    assert.throws(() => e.randomBytes(1.5), RangeError);
    assert.throws(() => e.randomBytes((1 << 20) + 1), RangeError);
  });
});
