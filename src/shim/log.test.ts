import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createLogger, jsonLogLine } from './log.js';

test('jsonLogLine() writes one JSON object per line with time, level, msg and the fields', () => {
  const line = jsonLogLine('warn', 'two\nlines "quoted"', { sandbox_id: 'abc', pod_name: 'p', empty: '', msg: 'not this' }, new Date(0));
  assert.equal(line.split('\n').length, 2);
  assert.deepEqual(JSON.parse(line), { time: '1970-01-01T00:00:00.000Z', level: 'warn', msg: 'two\nlines "quoted"', sandbox_id: 'abc', pod_name: 'p' });
  const long = JSON.parse(jsonLogLine('info', 'x'.repeat(40_000), {}));
  assert.match(long.msg, /… \(40000 characters\)$/);
});

test('createLogger() drops lines under its level and adds fields set later', () => {
  const lines: string[] = [];
  const logger = createLogger((l) => lines.push(l), { sandbox_id: 's' });
  logger.debug('hidden');
  logger.info('shown');
  logger.setLevel('error');
  logger.warn('hidden too');
  logger.setFields({ pod_namespace: 'ns' });
  logger.error('failed', { console_tail: 'tail' });
  const parsed = lines.map((l) => JSON.parse(l));
  assert.deepEqual(parsed.map((p) => [p.level, p.msg]), [['info', 'shown'], ['error', 'failed']]);
  assert.deepEqual({ ...parsed[1], time: undefined }, { time: undefined, level: 'error', msg: 'failed', sandbox_id: 's', pod_namespace: 'ns', console_tail: 'tail' });
});
