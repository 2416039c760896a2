import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { ByteTail, printable } from './byte-tail.js';

describe('ByteTail', () => {
  it('keeps everything while under capacity', () => {
    const tail = new ByteTail(10);
    tail.push(Buffer.from('abc'));
    tail.push(Buffer.from('def'));
    assert.equal(tail.text(), 'abcdef');
    assert.equal(tail.text(2), 'ef');
  });

  it('keeps only the last capacity bytes across many pushes', () => {
    const tail = new ByteTail(5);
    for (const piece of ['abc', 'defg', 'h', 'ijklm', 'no']) tail.push(Buffer.from(piece));
    assert.equal(tail.text(), 'jklmno'.slice(1));
  });

  it('keeps the end of one chunk larger than capacity', () => {
    const tail = new ByteTail(4);
    tail.push(Buffer.from('0123456789'));
    assert.equal(tail.text(), '6789');
  });

  it('copies pushed bytes, so callers may reuse their buffer', () => {
    const tail = new ByteTail(8);
    const buffer = Buffer.from('abcd');
    tail.push(buffer);
    buffer.fill(0x7a);
    assert.equal(tail.text(), 'abcd');
  });
});

describe('printable()', () => {
  it('turns CRLF into LF and replaces other control characters', () => {
    assert.equal(printable('a\r\nb\tc\x1b[31mred\rX\x00'), 'a\nb\tc\ufffd[31mred\ufffdX\ufffd');
  });
});
