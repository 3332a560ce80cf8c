// Unit tests of the pure rules in plain node: `node --test test/`. They mirror the Rust
// plugin's tests (plugins/capacity-booker/src/lib.rs) and the SDK's time and validation
// tests.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  fromConfig,
  parseDatetime,
  formatDatetime,
  localWeekday,
  localMinuteOfDay,
  localDay,
  fromLocalDay,
  profile,
  partsOrders,
  invalid,
  debugBookingError,
} from '../src/rules.js';

const rules = (pairs, wallClock = 0) => fromConfig((k) => pairs[k], wallClock);
const newYork = (extra = {}) =>
  rules({
    now: '2024-06-17T12:00:00Z',
    utc_offset_minutes: '-240',
    closed_dates: '2024-07-04',
    ...extra,
  });
const slot = (start, end) => ({ start: parseDatetime(start), end: parseDatetime(end) });

/** An in-memory stand-in for the host's kv `increment`. */
function memoryKv() {
  const store = new Map();
  return {
    store,
    increment(key, delta) {
      const next = (store.get(key) ?? 0n) + delta;
      store.set(key, next);
      return next;
    },
  };
}

const ctx = (key) => ({ workOrderId: 'WO-1', route: 'r', requestId: 'q', idempotencyKey: key });
const job = (start, end, requiredParts = []) => ({
  account: { accountNum: 'A' },
  location: { locationNum: 'L' },
  originalOrderNum: 'WO-1',
  requiredParts,
  timeConstraints: [{ period: { start, end } }],
});
const thrown = (f) => {
  try {
    f();
  } catch (e) {
    return e;
  }
  assert.fail('did not throw');
};

test('date-times parse with and without fractions and format with milliseconds', () => {
  const a = parseDatetime('2024-06-18T17:00:00.000Z');
  assert.equal(a, parseDatetime('2024-06-18T17:00:00Z'));
  assert.equal(a, 1_718_730_000_000n);
  assert.equal(parseDatetime('2024-06-18T17:00:00.5Z'), a + 500n);
  assert.equal(formatDatetime(a), '2024-06-18T17:00:00.000Z');
  for (const bad of [
    '',
    '2024-06-18',
    '2024-06-18T17:00:00',
    '2024-06-18T17:00:00+02:00',
    '2024-02-30T00:00:00Z',
    '2023-02-29T00:00:00Z',
    '2024-13-01T00:00:00Z',
    '2024-06-18T24:00:00Z',
    '2024-06-18T17:00:00.Z',
    '2024-06-18 17:00:00Z',
    '２024-06-18T17:00:00Z',
  ]) {
    assert.equal(parseDatetime(bad), null, bad);
  }
  for (const millis of [0n, 951_782_400_000n, -2_208_988_800_000n, 4_102_444_800_000n]) {
    assert.equal(parseDatetime(formatDatetime(millis)), millis);
  }
});

test('the local calendar follows the offset', () => {
  const t = parseDatetime('2024-06-18T02:00:00Z');
  assert.equal(localWeekday(t, 0n), 2);
  assert.equal(localWeekday(t, -240n), 1);
  assert.equal(localMinuteOfDay(t, -240n), 22n * 60n);
  assert.equal(formatDatetime(fromLocalDay(localDay(t, -240n), -240n)), '2024-06-17T04:00:00.000Z');
});

test('an open weekday slot is bookable; past, closed and out-of-hours slots are not', () => {
  const r = newYork();
  assert.equal(r.refuse(slot('2024-06-18T13:00:00Z', '2024-06-18T17:00:00Z')), null);
  const cases = [
    [['2024-06-10T13:00:00Z', '2024-06-10T17:00:00Z'], 'slot starting 2024-06-10T13:00:00.000Z is in the past'],
    [['2024-06-22T13:00:00Z', '2024-06-22T17:00:00Z'], 'slot starting 2024-06-22T13:00:00.000Z falls on a closed day'],
    [['2024-07-04T13:00:00Z', '2024-07-04T17:00:00Z'], 'slot starting 2024-07-04T13:00:00.000Z falls on a closed day'],
    [['2024-06-18T11:00:00Z', '2024-06-18T13:00:00Z'], 'slot 2024-06-18T11:00:00.000Z–2024-06-18T13:00:00.000Z is outside business hours 08:00–18:00'],
    [['2024-06-18T20:00:00Z', '2024-06-18T23:00:00Z'], 'slot 2024-06-18T20:00:00.000Z–2024-06-18T23:00:00.000Z is outside business hours 08:00–18:00'],
    [['2024-06-18T20:00:00Z', '2024-06-19T13:00:00Z'], 'slot 2024-06-18T20:00:00.000Z–2024-06-19T13:00:00.000Z is outside business hours 08:00–18:00'],
    [['2024-06-18T13:00:00Z', '2024-06-18T13:30:00Z'], 'slot of 30 minutes is shorter than the minimum of 60 minutes'],
  ];
  for (const [[start, end], reason] of cases) {
    assert.equal(r.refuse(slot(start, end)), reason);
  }
});

test('order numbers come from a gap-free sequence', () => {
  const kv = memoryKv();
  const r = newYork({ order_prefix: 'X-' });
  const j = job('2024-06-18T13:00:00Z', '2024-06-18T17:00:00Z');
  assert.deepEqual(r.book(ctx('key-1'), j, kv), { orderNum: 'X-00000001', orderedParts: [] });
  assert.equal(r.book(ctx('key-2'), j, kv).orderNum, 'X-00000002');
});

test('a full day of a service area is unavailable', () => {
  const kv = memoryKv();
  const r = newYork({ daily_capacity: '2' });
  const j = job('2024-06-18T13:00:00Z', '2024-06-18T17:00:00Z');
  r.book(ctx('a'), j, kv);
  r.book(ctx('b'), j, kv);
  assert.deepEqual(thrown(() => r.book(ctx('c'), j, kv)), {
    tag: 'slot-unavailable',
    val: 'service area default is fully booked on 2024-06-18 (2 bookings)',
  });
  assert.equal(kv.store.get('capacity/default/2024-06-18'), 3n); // the host drops it
  r.book(ctx('d'), job('2024-06-19T13:00:00Z', '2024-06-19T17:00:00Z'), kv);
});

test('a kv error is an internal error naming the KvError case', () => {
  const kv = {
    increment() {
      const e = new Error('x');
      e.payload = { tag: 'not-a-number', val: '"sequence/order" is not a number' };
      throw e;
    },
  };
  const j = job('2024-06-18T13:00:00Z', '2024-06-18T17:00:00Z');
  assert.deepEqual(thrown(() => newYork().book(ctx('k'), j, kv)), {
    tag: 'internal',
    val: 'key-value store: KvError::NotANumber("\\"sequence/order\\" is not a number")',
  });
});

test('parts are grouped and superseded parts replace the original', () => {
  const orders = partsOrders('k', [
    { prodNum: 'P1', shipToLocation: '1002', urgency: '1001' },
    { prodNum: 'P2', shipToLocation: '1002', urgency: '1001', supersededParts: [{ prodNum: 'P2-NEW' }] },
    { prodNum: 'P3', shipToLocation: '1001', urgency: '1001' },
    { prodNum: 'P1', shipToLocation: '1002', urgency: '1001' },
    { prodNum: '  ', shipToLocation: '0999' },
  ]);
  assert.deepEqual(
    orders.map((o) => o.parts),
    [['P3'], ['P1', 'P2-NEW']],
  );
  assert.match(orders[0].partOrderNum, /^PO-\d{10}$/);
  assert.notEqual(orders[0].partOrderNum, orders[1].partOrderNum);
  // Code-point (UTF-8) order, not UTF-16: U+FFFD sorts before U+1F600.
  const sorted = partsOrders('k', [
    { prodNum: 'A', shipToLocation: '\u{1F600}' },
    { prodNum: 'B', shipToLocation: '\uFFFD' },
  ]);
  assert.deepEqual(sorted.map((o) => o.parts[0]), ['B', 'A']);
});

test('validation names every missing field, and invalid() names the last segment', () => {
  const e = thrown(() => profile({}));
  assert.equal(e.tag, 'invalid-request');
  assert.equal(e.val.message, '4 properties are invalid');
  assert.deepEqual(
    e.val.params.map((p) => p.path),
    ['$.Account', '$.Location', '$.OriginalOrderNum', '$.TimeConstraints'],
  );
  const slots = thrown(() =>
    profile({
      ...job('x', 'y'),
      timeConstraints: [
        { period: { start: '2024-06-18T13:00:00Z' } },
        { period: { start: '2024-06-18T13:00:00Z', end: '2024-06-18T12:00:00Z' } },
        { desc: 'no period' },
      ],
    }),
  );
  assert.deepEqual(
    slots.val.params.map((p) => [p.name, p.path]),
    [
      ['End', '$.TimeConstraints[0].Period.End'],
      ['End', '$.TimeConstraints[1].Period.End'],
      ['Period', '$.TimeConstraints[2].Period'],
    ],
  );
  assert.deepEqual(invalid('$.TimeConstraints[0].Period', 'r', 'v').val, {
    message: '$.TimeConstraints[0].Period r',
    params: [{ name: 'Period', reason: 'r', path: '$.TimeConstraints[0].Period', value: 'v' }],
  });
  assert.equal(
    debugBookingError(invalid('$', 'bad "x"', '')),
    'BookingError::InvalidRequest(InvalidRequestError { message: "$ bad \\"x\\"", params: [InvalidParam { name: "$", reason: "bad \\"x\\"", path: "$", value: "" }] })',
  );
});

test('search answers the open slots inside the window', () => {
  const answer = newYork().search(job('2024-06-21T12:00:00Z', '2024-06-24T22:00:00Z'));
  assert.deepEqual(
    answer.timeConstraints.map((t) => t.period.start),
    ['2024-06-21T12:00:00.000Z', '2024-06-21T16:00:00.000Z', '2024-06-24T12:00:00.000Z', '2024-06-24T16:00:00.000Z'],
  );
  assert.equal(answer.statusMsg, '4 open slots found');
  assert.deepEqual(answer.timeConstraints[0], {
    id: `SLOT-${1_718_971_200_000 / 60_000}`,
    desc: 'Fri 2024-06-21 08:00–12:00 (UTC-04:00)',
    type: '1001',
    period: { start: '2024-06-21T12:00:00.000Z', end: '2024-06-21T16:00:00.000Z' },
  });
  const three = rules({ now: '2024-06-17T00:00:00Z', max_slots: '3' });
  assert.equal(three.search(job('2024-06-17T00:00:00Z', '2024-07-17T00:00:00Z')).timeConstraints.length, 3);
});

test('configuration: defaults, Rust parsing, the wall clock without `now`', () => {
  const d = rules({}, 1234);
  assert.equal(d.now, 1234n);
  assert.deepEqual(d.closedWeekdays, [6, 7]);
  const r = rules({
    utc_offset_minutes: ' +60 ',
    open: ' 07:30',
    close: '24:00',
    closed_weekdays: ' 1, x, +2,-3,',
    min_slot_minutes: '1.5',
    slot_minutes: '0',
    max_slots: '-1',
    daily_capacity: '-1',
  });
  assert.equal(r.utcOffsetMinutes, 60n);
  assert.equal(r.open, 450n);
  assert.equal(r.close, 1440n);
  assert.deepEqual(r.closedWeekdays, [1, 2]);
  assert.equal(r.minSlotMinutes, 60n);
  assert.equal(r.slotMinutes, 240n);
  assert.equal(r.maxSlots, 10n);
  assert.equal(r.dailyCapacity, null);
  assert.equal(rules({ open: '8:60' }).open, 480n);
  assert.equal(rules({ utc_offset_minutes: '9223372036854775808' }).utcOffsetMinutes, 0n);
});
