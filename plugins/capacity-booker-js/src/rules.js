// Capacity booker: the example booking rules of plugins/capacity-booker (Rust), in
// JavaScript. Same rules, same answers, byte for byte; see the README beside this file.
//
// This module is pure: no WIT imports. The rules read their settings through a `get`
// function (the host's config service in production) and count through a `kv` object
// with `increment(key, delta)` (BigInt in, BigInt out, like the WIT `s64`), so they run
// unchanged in plain node (test/rules.test.mjs) and in the component (src/app.js).
//
// Integers: the Rust rules compute in i64, which wraps in a release build. Every integer
// here that comes from a timestamp or the configuration is a BigInt kept in i64 range
// with the same wrapping, so even absurd settings (an offset of 10^15 minutes) give the
// same answer as the Rust component.
//
// Errors: the rules throw the `booking-error` variant as componentize-js expects it,
// `{ tag: 'slot-unavailable', val: 'reason' }`, `{ tag: 'invalid-request', val: { message,
// params } }` or `{ tag: 'internal', val }`.

// ---------------------------------------------------------------------------------------
// i64 arithmetic (Rust release semantics: wrapping).

const wrap = (x) => BigInt.asIntN(64, x);
const add = (a, b) => wrap(a + b);
const sub = (a, b) => wrap(a - b);
const mul = (a, b) => wrap(a * b);
/** `i64::div_euclid` (the divisors here are positive constants). */
function divEuclid(a, b) {
  const q = a / b;
  return a % b < 0n ? (b > 0n ? q - 1n : q + 1n) : q;
}
/** `i64::rem_euclid`. */
function remEuclid(a, b) {
  const r = a % b;
  return r < 0n ? r + (b < 0n ? -b : b) : r;
}
const I64_MAX = (1n << 63n) - 1n;
const I64_MIN = -(1n << 63n);

/** Rust's `{:0W}` for an integer: zero padding after the sign. */
function pad(n, width) {
  const neg = n < 0n || (typeof n === 'number' && n < 0);
  let digits = String(n);
  if (neg) digits = digits.slice(1);
  const sign = neg ? '-' : '';
  return sign + digits.padStart(width - sign.length, '0');
}

// ---------------------------------------------------------------------------------------
// Text helpers with Rust's semantics.

// `char::is_whitespace` (Unicode White_Space), which is not JavaScript's `trim` set
// (JavaScript adds U+FEFF and lacks U+0085).
const WS = '\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const TRIM = new RegExp(`^[${WS}]+|[${WS}]+$`, 'g');
/** `str::trim`. */
export const trim = (s) => s.replace(TRIM, '');

/** `str::parse::<i64>()`: optional sign, ASCII digits, in range; else `null`. */
export function parseI64(s) {
  if (!/^[+-]?[0-9]+$/.test(s)) return null;
  const n = BigInt(s);
  return n < I64_MIN || n > I64_MAX ? null : n;
}

/** `str::parse::<u8>()`. */
function parseU8(s) {
  if (!/^\+?[0-9]+$/.test(s)) return null;
  const n = BigInt(s);
  return n > 255n ? null : Number(n);
}

/** Orders strings as Rust does (by UTF-8 bytes, which is by code point). */
export function compareStr(a, b) {
  const x = a[Symbol.iterator]();
  const y = b[Symbol.iterator]();
  for (;;) {
    const p = x.next();
    const q = y.next();
    if (p.done) return q.done ? 0 : -1;
    if (q.done) return 1;
    const c = p.value.codePointAt(0);
    const d = q.value.codePointAt(0);
    if (c !== d) return c < d ? -1 : 1;
  }
}

/** The UTF-8 bytes of a string (strings from the host are valid Unicode). */
function utf8(s) {
  const out = [];
  for (const ch of s) {
    const c = ch.codePointAt(0);
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else
      out.push(
        0xf0 | (c >> 18),
        0x80 | ((c >> 12) & 63),
        0x80 | ((c >> 6) & 63),
        0x80 | (c & 63),
      );
  }
  return out;
}

// `{:?}` of a `str`: quoted, with Rust's escapes. Which characters Rust escapes as
// `\u{…}` (non-printable or grapheme-extending) comes from Unicode tables; node has them
// as regular-expression property escapes, the component's engine (built without ICU) does
// not, and gets the common ranges: controls, format characters, combining marks, private
// use, separators other than the space.
const NON_PRINTABLE = (() => {
  try {
    return new RegExp(
      '[\\p{Cc}\\p{Cf}\\p{Cs}\\p{Co}\\p{Cn}\\p{Zl}\\p{Zp}\\p{Zs}\\p{Grapheme_Extend}]',
      'u',
    );
  } catch (_) {
    return /[\x00-\x1f\x7f-\xa0\xad\u0300-\u036f\u0483-\u0489\u0591-\u05bd\u0600-\u0605\u061c\u06dd\u070f\u1680\u180e\u2000-\u200f\u2028-\u202f\u205f-\u206f\u20d0-\u20f0\u3000\ud800-\uf8ff\ufe00-\ufe0f\ufe20-\ufe2f\ufeff\ufff9-\ufffb]/u;
  }
})();
export function debugStr(s) {
  let out = '"';
  for (const ch of s) {
    switch (ch) {
      case '\0': out += '\\0'; break;
      case '\t': out += '\\t'; break;
      case '\r': out += '\\r'; break;
      case '\n': out += '\\n'; break;
      case '\\': out += '\\\\'; break;
      case '"': out += '\\"'; break;
      default:
        out += ch !== ' ' && NON_PRINTABLE.test(ch)
          ? `\\u{${ch.codePointAt(0).toString(16)}}`
          : ch;
    }
  }
  return out + '"';
}

// The names wit-bindgen gives the cases in Rust (`{e:?}` of a WIT variant).
const camel = (tag) => tag.replace(/(^|-)([a-z])/g, (_, __, c) => c.toUpperCase());

/** `{:?}` of a WIT variant whose payload is a string, e.g. `KvError::TooLarge("…")`. */
function debugVariant(type, err) {
  if (err && typeof err === 'object' && typeof err.tag === 'string') {
    const payload = typeof err.val === 'string' ? `(${debugStr(err.val)})` : '';
    return `${type}::${camel(err.tag)}${payload}`;
  }
  return String(err);
}

/** `{:?}` of a `booking-error`, as `log::outcome` writes it. */
export function debugBookingError(e) {
  if (e.tag === 'invalid-request') {
    const params = e.val.params
      .map(
        (p) =>
          `InvalidParam { name: ${debugStr(p.name)}, reason: ${debugStr(p.reason)}, ` +
          `path: ${debugStr(p.path)}, value: ${debugStr(p.value)} }`,
      )
      .join(', ');
    return `BookingError::InvalidRequest(InvalidRequestError { message: ${debugStr(
      e.val.message,
    )}, params: [${params}] })`;
  }
  return debugVariant('BookingError', e);
}

// ---------------------------------------------------------------------------------------
// Contract date-times (guest-sdk time.rs and codec.rs): milliseconds since the epoch, as
// BigInt.

const MINUTE = 60_000n;
const DAY = 24n * 60n * MINUTE;

const isLeap = (y) => (y % 4n === 0n && y % 100n !== 0n) || y % 400n === 0n;
function daysInMonth(y, m) {
  if (m === 2n) return isLeap(y) ? 29n : 28n;
  return m === 4n || m === 6n || m === 9n || m === 11n ? 30n : 31n;
}

// Howard Hinnant's days-from-civil and its inverse.
function daysFromCivil(y, m, d) {
  y = m <= 2n ? y - 1n : y;
  const era = divEuclid(y, 400n);
  const yoe = y - era * 400n;
  const mp = (m + 9n) % 12n;
  const doy = (153n * mp + 2n) / 5n + d - 1n;
  const doe = yoe * 365n + yoe / 4n - yoe / 100n + doy;
  return era * 146_097n + doe - 719_468n;
}

function civilFromDays(z) {
  z = z + 719_468n;
  const era = divEuclid(z, 146_097n);
  const doe = z - era * 146_097n;
  const yoe = (doe - doe / 1460n + doe / 36_524n - doe / 146_096n) / 365n;
  const doy = doe - (365n * yoe + yoe / 4n - yoe / 100n);
  const mp = (5n * doy + 2n) / 153n;
  const d = doy - (153n * mp + 2n) / 5n + 1n;
  const m = mp < 10n ? mp + 3n : mp - 9n;
  const y = yoe + era * 400n + (m <= 2n ? 1n : 0n);
  return [y, m, d];
}

/** Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z` (1 to 9 fraction digits); anything else is `null`. */
export function parseDatetime(s) {
  // Every accepted character is ASCII, so string indices are the Rust byte indices.
  if (typeof s !== 'string' || !/^[\x00-\x7f]*$/.test(s)) return null;
  if (s.length < 20 || s[4] !== '-' || s[7] !== '-' || s[10] !== 'T') return null;
  if (s[13] !== ':' || s[16] !== ':' || s[s.length - 1] !== 'Z') return null;
  const num = (from, to) => {
    const part = s.slice(from, to);
    return /^[0-9]*$/.test(part) && part !== '' ? BigInt(part) : null;
  };
  const fields = [num(0, 4), num(5, 7), num(8, 10), num(11, 13), num(14, 16), num(17, 19)];
  if (fields.includes(null)) return null;
  const [year, month, day, hour, minute, second] = fields;
  let millis = 0n;
  const rest = s.slice(19, s.length - 1);
  if (rest !== '') {
    if (rest[0] !== '.') return null;
    const frac = rest.slice(1);
    if (frac === '' || frac.length > 9 || !/^[0-9]+$/.test(frac)) return null;
    millis = BigInt(frac.padEnd(3, '0').slice(0, 3));
  }
  if (month < 1n || month > 12n || day < 1n || day > daysInMonth(year, month)) return null;
  if (hour > 23n || minute > 59n || second > 59n) return null;
  const days = daysFromCivil(year, month, day);
  return ((days * 24n + hour) * 60n + minute) * 60_000n + second * 1000n + millis;
}

/** Formats milliseconds since the epoch as `2024-06-18T17:00:00.000Z`. */
export function formatDatetime(millis) {
  const days = divEuclid(millis, 86_400_000n);
  let rem = remEuclid(millis, 86_400_000n);
  const [y, m, d] = civilFromDays(days);
  const h = rem / 3_600_000n;
  rem %= 3_600_000n;
  const min = rem / 60_000n;
  rem %= 60_000n;
  const sec = rem / 1000n;
  const ms = rem % 1000n;
  return `${pad(y, 4)}-${pad(m, 2)}-${pad(d, 2)}T${pad(h, 2)}:${pad(min, 2)}:${pad(sec, 2)}.${pad(ms, 3)}Z`;
}

export const plusMinutes = (t, minutes) => add(t, mul(minutes, MINUTE));
export const minutesUntil = (t, later) => divEuclid(sub(later, t), MINUTE);
export const localDay = (t, off) => divEuclid(add(t, mul(off, MINUTE)), DAY);
export const localMinuteOfDay = (t, off) => remEuclid(add(t, mul(off, MINUTE)), DAY) / MINUTE;
/** ISO weekday (1 = Monday … 7 = Sunday); 1970-01-01 was a Thursday. */
export const localWeekday = (t, off) => Number(remEuclid(add(localDay(t, off), 3n), 7n) + 1n);
export const fromLocalDay = (day, off) => sub(mul(day, DAY), mul(off, MINUTE));

const slotMinutes = (slot) => minutesUntil(slot.start, slot.end);

/** Both ends of a `period` parsed; `null` if either is absent or not a date-time. */
function slotFromPeriod(period) {
  if (period == null || period.start == null || period.end == null) return null;
  const start = parseDatetime(period.start);
  if (start === null) return null;
  const end = parseDatetime(period.end);
  if (end === null) return null;
  return { start, end };
}

/** Every parsable `TimeConstraints` period, in order. */
export function slotsOf(job) {
  const out = [];
  for (const tc of job.timeConstraints ?? []) {
    const slot = slotFromPeriod(tc.period);
    if (slot) out.push(slot);
  }
  return out;
}

/** The first parsable `TimeConstraints` period: the slot being booked. */
const slotOf = (job) => slotsOf(job)[0] ?? null;

// ---------------------------------------------------------------------------------------
// Errors (guest-sdk errors.rs).

/** `BookingError::invalid`: the request breaks a rule at one JSON path. */
export function invalid(path, reason, value) {
  const tail = path.split('.').pop();
  const head = tail.split('[')[0];
  const name = head !== '' && head !== '$' ? head : '$';
  return {
    tag: 'invalid-request',
    val: { message: `${path} ${reason}`, params: [{ name, reason, path, value }] },
  };
}

export const slotUnavailable = (reason) => ({ tag: 'slot-unavailable', val: reason });
export const internal = (message) => ({ tag: 'internal', val: message });

// ---------------------------------------------------------------------------------------
// The recommended validation profile (guest-sdk validate.rs).

const blank = (s) => s == null || trim(s) === '';

/** Throws `invalid-request` naming every problem, or returns. */
export function profile(job) {
  const params = [];
  const add = (name, path, reason, value) => params.push({ name, reason, path, value });

  const a = job.account;
  if (a == null) add('Account', '$.Account', 'is required', '');
  else if (blank(a.accountNum) && blank(a.name))
    add('Account', '$.Account', 'needs AccountNum (managed account) or Name (ad-hoc account)', '');
  const l = job.location;
  if (l == null) add('Location', '$.Location', 'is required', '');
  else if (blank(l.locationNum) && l.address == null)
    add(
      'Location',
      '$.Location',
      'needs LocationNum (managed location) or Address (ad-hoc location)',
      '',
    );
  if (blank(job.originalOrderNum))
    add(
      'OriginalOrderNum',
      '$.OriginalOrderNum',
      'is required and must not be empty',
      job.originalOrderNum ?? '',
    );
  checkSlots(job, add);

  if (params.length > 0) {
    throw {
      tag: 'invalid-request',
      val: { message: `${params.length} properties are invalid`, params },
    };
  }
}

function checkSlots(job, add) {
  const entries = job.timeConstraints ?? [];
  if (entries.length === 0) {
    add(
      'TimeConstraints',
      '$.TimeConstraints',
      'at least one slot with Period.Start and Period.End is required',
      '',
    );
    return;
  }
  entries.forEach((tc, i) => {
    const period = tc.period;
    if (period == null) {
      add('Period', `$.TimeConstraints[${i}].Period`, 'is required', '');
      return;
    }
    let complete = true;
    for (const [name, value] of [
      ['Start', period.start],
      ['End', period.end],
    ]) {
      if (blank(value)) {
        complete = false;
        add(name, `$.TimeConstraints[${i}].Period.${name}`, 'is required', value ?? '');
      }
    }
    if (!complete) return;
    const slot = slotFromPeriod(period);
    if (slot === null)
      add(
        'Period',
        `$.TimeConstraints[${i}].Period`,
        'Start and End must be UTC ISO-8601 date-times',
        '',
      );
    else if (!(slot.start < slot.end))
      add('End', `$.TimeConstraints[${i}].Period.End`, 'must be after Period.Start', period.end ?? '');
  });
}

// ---------------------------------------------------------------------------------------
// Settings.

export const DEFAULTS = Object.freeze({
  now: 0n,
  utcOffsetMinutes: 0n,
  open: 8n * 60n,
  close: 18n * 60n,
  closedWeekdays: [6, 7],
  closedDays: [],
  minSlotMinutes: 60n,
  slotMinutes: 240n,
  maxSlots: 10n,
  orderPrefix: 'FU-',
  dailyCapacity: null,
  // 'sequence': the store's gap-free sequence; 'key': derived from the idempotency key.
  orderNumbers: 'sequence',
});

/** `HH:MM` as minutes since midnight (up to 24:00); else `null`. */
function clockMinutes(text) {
  const t = trim(text);
  const colon = t.indexOf(':');
  if (colon < 0) return null;
  const h = parseI64(t.slice(0, colon));
  const m = parseI64(t.slice(colon + 1));
  if (h === null || m === null) return null;
  return h >= 0n && h <= 24n && m >= 0n && m < 60n && h * 60n + m <= 24n * 60n ? h * 60n + m : null;
}

const USIZE_MAX = (1n << 32n) - 1n; // wasm32

/**
 * Reads the settings through `get(key)` (string or undefined), falling back to the
 * defaults; `wallClock` is the current time in milliseconds, used when `now` is absent.
 * Keys are read in the same order as the Rust rules read them.
 */
export function fromConfig(get, wallClock) {
  const d = DEFAULTS;
  const value = (key) => {
    const v = get(key);
    return v == null ? null : v;
  };
  const parsed = (key) => {
    const v = value(key);
    return v === null ? null : parseI64(trim(v));
  };
  const list = (key) => {
    const v = value(key);
    return v === null ? null : v.split(',').map(trim).filter((s) => s !== '');
  };
  const or = (v, dflt) => (v === null ? dflt : v);

  const utcOffsetMinutes = or(parsed('utc_offset_minutes'), d.utcOffsetMinutes);
  const nowText = value('now');
  const nowParsed = nowText === null ? null : parseDatetime(trim(nowText));
  const now = or(nowParsed, BigInt(wallClock));
  const openText = value('open');
  const open = or(openText === null ? null : clockMinutes(openText), d.open);
  const closeText = value('close');
  const close = or(closeText === null ? null : clockMinutes(closeText), d.close);
  const weekdays = list('closed_weekdays');
  const closedWeekdays =
    weekdays === null ? [...d.closedWeekdays] : weekdays.map(parseU8).filter((n) => n !== null);
  const closedDays = (list('closed_dates') ?? [])
    .map((date) => parseDatetime(`${date}T00:00:00Z`))
    .filter((t) => t !== null)
    .map((t) => localDay(t, 0n));
  const minSlotMinutes = or(parsed('min_slot_minutes'), d.minSlotMinutes);
  const slot = parsed('slot_minutes');
  const slotMinutes = slot !== null && slot > 0n ? slot : d.slotMinutes;
  const max = parsed('max_slots');
  const maxSlots = max !== null && max >= 0n && max <= USIZE_MAX ? max : d.maxSlots;
  const orderPrefix = or(value('order_prefix'), d.orderPrefix);
  const cap = parsed('daily_capacity');
  const dailyCapacity = cap !== null && cap >= 0n ? cap : null;
  const numbers = value('order_numbers');
  const orderNumbers = numbers !== null && trim(numbers) === 'key' ? 'key' : d.orderNumbers;

  return new Rules({
    now,
    utcOffsetMinutes,
    open,
    close,
    closedWeekdays,
    closedDays,
    minSlotMinutes,
    slotMinutes,
    maxSlots,
    orderPrefix,
    dailyCapacity,
    orderNumbers,
  });
}

const DAYS = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'];

// ---------------------------------------------------------------------------------------
// The rules.

export class Rules {
  /** `settings`: as `fromConfig` builds them (every integer a BigInt except the weekdays). */
  constructor(settings) {
    Object.assign(this, DEFAULTS, settings);
  }

  isClosedDay(at) {
    const off = this.utcOffsetMinutes;
    const day = localDay(at, off);
    return (
      this.closedWeekdays.includes(localWeekday(at, off)) ||
      this.closedDays.some((d) => d === day)
    );
  }

  /** Why `slot` ({start, end} in BigInt milliseconds) cannot be booked; `null` if it can. */
  refuse(slot) {
    const off = this.utcOffsetMinutes;
    if (slot.start < this.now) {
      return `slot starting ${formatDatetime(slot.start)} is in the past`;
    }
    if (this.isClosedDay(slot.start)) {
      return `slot starting ${formatDatetime(slot.start)} falls on a closed day`;
    }
    const start = localMinuteOfDay(slot.start, off);
    const startDay = localDay(slot.start, off);
    const endDay = localDay(slot.end, off);
    const sameDay =
      startDay === endDay ||
      (localMinuteOfDay(slot.end, off) === 0n && endDay === add(startDay, 1n));
    const end = sameDay ? add(start, slotMinutes(slot)) : I64_MAX;
    if (start < this.open || end > this.close) {
      const hm = (m) => `${pad(m / 60n, 2)}:${pad(m % 60n, 2)}`;
      return (
        `slot ${formatDatetime(slot.start)}–${formatDatetime(slot.end)} is outside business ` +
        `hours ${hm(this.open)}–${hm(this.close)}`
      );
    }
    const minutes = slotMinutes(slot);
    if (minutes < this.minSlotMinutes) {
      return `slot of ${minutes} minutes is shorter than the minimum of ${this.minSlotMinutes} minutes`;
    }
    return null;
  }

  /** A slot as a person reads it: `Mon 2024-06-17 08:00–12:00 (UTC-04:00)`. */
  describe(slot) {
    const off = this.utcOffsetMinutes;
    const start = formatDatetime(plusMinutes(slot.start, off));
    const end = formatDatetime(plusMinutes(slot.end, off));
    const weekday = DAYS[localWeekday(slot.start, off) - 1];
    const sign = off < 0n ? '-' : '+';
    const abs = wrap(off < 0n ? -off : off); // i64::abs wraps at i64::MIN
    return (
      `${weekday} ${start.slice(0, 10)} ${start.slice(11, 16)}–${end.slice(11, 16)} ` +
      `(UTC${sign}${pad(abs / 60n, 2)}:${pad(abs % 60n, 2)})`
    );
  }

  /**
   * Books `job`: `{ orderNum, orderedParts }`, or throws the `booking-error`.
   * `kv.increment(key, delta)` takes and returns BigInt and throws the WIT `kv-error`
   * (or an error whose `payload` is it).
   */
  book(ctx, job, kv) {
    profile(job);
    const slot = slotOf(job);
    if (slot === null) throw invalid('$.TimeConstraints', 'has no bookable slot', '');
    const reason = this.refuse(slot);
    if (reason !== null) throw slotUnavailable(reason);
    const increment = (key) => {
      try {
        return BigInt.asIntN(64, BigInt(kv.increment(key, 1n)));
      } catch (e) {
        const err = e && typeof e === 'object' && 'payload' in e ? e.payload : e;
        throw internal(`key-value store: ${debugVariant('KvError', err)}`);
      }
    };
    if (this.dailyCapacity !== null) {
      const capacity = this.dailyCapacity;
      const id = job.location?.serviceAreaId;
      const area = id != null && id !== '' ? id : 'default';
      const day = formatDatetime(
        fromLocalDay(localDay(slot.start, this.utcOffsetMinutes), 0n),
      ).slice(0, 10);
      const taken = increment(`capacity/${area}/${day}`);
      if (taken > capacity) {
        // The failed booking's writes are dropped: the count stays at capacity.
        throw slotUnavailable(
          `service area ${area} is fully booked on ${day} (${capacity} bookings)`,
        );
      }
    }
    const orderNum =
      this.orderNumbers === 'key'
        ? `${this.orderPrefix}${shortId(ctx.idempotencyKey, 'order')}`
        : `${this.orderPrefix}${pad(increment('sequence/order'), 8)}`;
    return {
      orderNum,
      orderedParts: partsOrders(ctx.idempotencyKey, job.requiredParts ?? []),
    };
  }

  /** The open slots inside the query's windows: the search response, or throws. */
  search(query) {
    const windows = slotsOf(query);
    if (windows.length === 0) {
      throw invalid(
        '$.TimeConstraints',
        'at least one availability window with Period.Start and Period.End is required',
        '',
      );
    }
    const off = this.utcOffsetMinutes;
    const max = Number(this.maxSlots);
    const found = [];
    windows: for (const window of windows) {
      let day = localDay(window.start, off);
      while (fromLocalDay(day, off) < window.end) {
        const midnight = fromLocalDay(day, off);
        const closing = plusMinutes(midnight, this.close);
        let start = plusMinutes(midnight, this.open);
        for (;;) {
          const end = plusMinutes(start, this.slotMinutes);
          if (end > closing) break;
          const slot = { start, end };
          if (start >= window.start && end <= window.end && this.refuse(slot) === null) {
            if (found.length === max) break windows;
            found.push(slot);
          }
          start = end;
        }
        day = add(day, 1n);
      }
    }
    const statusMsg =
      found.length === 0
        ? 'no open slots within the requested window'
        : found.length === 1
          ? '1 open slot found'
          : `${found.length} open slots found`;
    return {
      statusMsg,
      timeConstraints: found.map((slot) => ({
        id: `SLOT-${slot.start / 60_000n}`,
        desc: this.describe(slot),
        type: '1001',
        period: { start: formatDatetime(slot.start), end: formatDatetime(slot.end) },
      })),
    };
  }
}

// ---------------------------------------------------------------------------------------
// Parts orders.

const FNV_OFFSET = 0xcbf29ce484222325n;
const FNV_PRIME = 0x100000001b3n;

/** FNV-1a 64 over each part's UTF-8 bytes followed by a 0xff byte. */
export function fnv1a(parts) {
  let h = FNV_OFFSET;
  for (const part of parts) {
    for (const b of [...utf8(part), 0xff]) {
      h = BigInt.asUintN(64, (h ^ BigInt(b)) * FNV_PRIME);
    }
  }
  return h;
}

const shortId = (key, purpose) => pad(fnv1a([key, purpose]) % 10_000_000_000n, 10);

/**
 * Groups required parts into parts orders by (ship-to location, urgency), in that order
 * (by code point, as Rust's BTreeMap of String pairs). A part with `SupersededParts` is
 * ordered as its replacements.
 */
export function partsOrders(key, parts) {
  const groups = [];
  for (const part of parts) {
    const shipTo = part.shipToLocation ?? '';
    const urgency = part.urgency ?? '';
    const replacements = (part.supersededParts ?? [])
      .map((s) => s.prodNum)
      .filter((p) => p != null && trim(p) !== '');
    const numbers =
      replacements.length > 0
        ? replacements
        : part.prodNum != null && trim(part.prodNum) !== ''
          ? [part.prodNum]
          : [];
    let entry = groups.find((g) => g.shipTo === shipTo && g.urgency === urgency);
    if (!entry) {
      entry = { shipTo, urgency, parts: [] };
      groups.push(entry);
    }
    for (const number of numbers) {
      if (!entry.parts.includes(number)) entry.parts.push(number);
    }
  }
  return groups
    .sort((a, b) => compareStr(a.shipTo, b.shipTo) || compareStr(a.urgency, b.urgency))
    .filter((g) => g.parts.length > 0)
    .map((g) => ({
      partOrderNum: `PO-${shortId(key, `parts/${g.shipTo}/${g.urgency}`)}`,
      parts: g.parts,
    }));
}

/** `log::outcome`: the level and line the Rust rules log for a booking's answer. */
export function outcome(answer, error) {
  return error === undefined
    ? ['info', `booked ${answer.orderNum}`]
    : ['warn', `refused: ${debugBookingError(error)}`];
}

/** Whether `e` is a `booking-error` variant (as the rules throw them). */
export function isBookingError(e) {
  return (
    e !== null &&
    typeof e === 'object' &&
    [
      'invalid-request',
      'slot-unavailable',
      'conflict',
      'unauthorized',
      'upstream-failure',
      'internal',
    ].includes(e.tag)
  );
}
