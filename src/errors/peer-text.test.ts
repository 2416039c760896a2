import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { fromStatus, toStatus, STATUS_MESSAGE_MAX_BYTES } from './grpc-status.js';
import { HullError } from './index.js';
import { PEER_TEXT_MAX_BYTES, peerText } from './peer-text.js';

const bytes = (s: string) => Buffer.byteLength(s, 'utf8');

test('peerText keeps ordinary text, newlines and tabs as they are', () => {
  const text = 'crun: container create failed:\n\tmount "proc" on "/proc": Permission denied — ✓ 日本 😀';
  assert.equal(peerText(text), text);
  assert.equal(peerText(''), '');
});

test('peerText cuts a 1 MiB message to 4 KiB and says how long it was', () => {
  const huge = 'x'.repeat(1 << 20);
  const out = peerText(huge);
  assert.ok(bytes(out) <= PEER_TEXT_MAX_BYTES, `${bytes(out)} bytes`);
  assert.ok(out.startsWith('xxxx'));
  assert.match(out, /… \[cut: 1048576 bytes in all\]$/);
  // Just at the limit nothing is cut; one byte over is.
  assert.equal(peerText('y'.repeat(PEER_TEXT_MAX_BYTES)), 'y'.repeat(PEER_TEXT_MAX_BYTES));
  assert.match(peerText('y'.repeat(PEER_TEXT_MAX_BYTES + 1)), /\[cut: 4097 bytes in all\]$/);
});

test('peerText never splits a multi-byte character when it cuts', () => {
  for (const unit of ['é', '日', '😀']) {
    const out = peerText(unit.repeat(5000));
    assert.ok(bytes(out) <= PEER_TEXT_MAX_BYTES);
    assert.doesNotMatch(out, /\ufffd/, `${unit}: a character was split`);
    assert.match(out, new RegExp(`^(?:${unit})+ … \\[cut: \\d+ bytes in all\\]$`, 'u'));
  }
});

test('peerText replaces ANSI escapes, NULs, carriage returns and other control characters', () => {
  assert.equal(peerText('\x1b[2J\x1b[31mred\x1b[0m'), '\ufffd[2J\ufffd[31mred\ufffd[0m');
  assert.equal(peerText('a\0b\0\0c'), 'a\ufffdb\ufffd\ufffdc');
  assert.equal(peerText('real error\rfake line'), 'real error\ufffdfake line');
  assert.equal(peerText('bell\x07 del\x7f c1\x9b'), 'bell\ufffd del\ufffd c1\ufffd');
  assert.equal(peerText('abc\u202egnp.exe\u2028x'), 'abc\ufffdgnp.exe\ufffdx');
  assert.equal(peerText('lone \ud800 half, pair \ud83d\ude00'), 'lone \ufffd half, pair 😀');
  assert.equal(peerText('two\nlines\tand a tab'), 'two\nlines\tand a tab');
});

test('peerText bounds a 1 MiB message of NULs and escapes too', () => {
  for (const unit of ['\0', '\x1b[0m']) {
    const out = peerText(unit.repeat((1 << 20) / unit.length));
    assert.ok(bytes(out) <= PEER_TEXT_MAX_BYTES);
    assert.doesNotMatch(out, /[\0\x1b]/);
  }
});

test('fromStatus makes a peer message safe; toStatus bounds what hull sends', () => {
  const error = fromStatus(13, `boom\x1b[1m${'!'.repeat(1 << 20)}`);
  assert.equal(error.code, 'internal');
  assert.ok(error.message.startsWith('boom\ufffd[1m!!!'));
  assert.ok(bytes(error.message) <= PEER_TEXT_MAX_BYTES);
  const sent = toStatus(new HullError('internal', `a\0b${'z'.repeat(1 << 20)}`));
  assert.equal(sent.code, 13);
  assert.ok(sent.message.startsWith('a\ufffdbzz'));
  assert.ok(bytes(sent.message) <= STATUS_MESSAGE_MAX_BYTES);
});
