"""The capacity booker's rules, in plain Python (no WIT imports), so they run under
`python3 -m unittest` as well as inside the component.

A line-by-line port of `plugins/capacity-booker/src/lib.rs` and of what it uses from the
Rust guest SDK (`validate::profile`, `time`, `json::parse_datetime`/`format_datetime`,
`BookingError::invalid`, `log::outcome`). The answers are meant to be byte-identical to the
Rust component's for the same request and configuration, so the port keeps Rust's integer
semantics: i64 arithmetic wraps (the guest is built in release, without overflow checks),
`div_euclid`/`rem_euclid` are Python's `//`/`%` for positive divisors, `/` and `%` on
possibly-negative values truncate toward zero, and `str::parse` / `str::trim` accept
exactly what Rust accepts.

Requests are read duck-typed: any object with the WIT records' snake_case attributes
(`job.account.account_num`, `tc.period.start`, ...) will do. Answers and refusals are
plain Python values; `app.py` turns them into WIT records.

Booking (`Rules.book`):
- the request must satisfy the recommended validation profile;
- the slot must not be in the past, on a closed weekday or date, outside business hours,
  or shorter than the minimum length;
- each service area (the Location's `ServiceAreaID`, else `default`) takes at most
  `daily_capacity` bookings per local day, counted in the key-value store
  (`capacity/AREA/YYYY-MM-DD`); a full day answers `slot-unavailable`;
- the follow-up `OrderNum` is the next number of the store's sequence `sequence/order`;
- required parts are grouped into parts orders by ship-to location and urgency; a part's
  `SupersededParts` replace it in the order.

Search (`Rules.search`): open slots of `slot_minutes` inside business hours, within the
requested windows, skipping the past and closed days.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

# --- Rust integer semantics ---------------------------------------------------------

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1
U32_MAX = (1 << 32) - 1  # usize on wasm32


def wrap(x: int) -> int:
    """`x` as an i64 with two's-complement wrap-around (release-mode Rust arithmetic)."""
    return ((x + (1 << 63)) % (1 << 64)) - (1 << 63)


def tdiv(a: int, b: int) -> int:
    """Rust's `/` on integers: truncates toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def trem(a: int, b: int) -> int:
    """Rust's `%` on integers: the remainder has the sign of `a`."""
    return a - b * tdiv(a, b)


def rust_abs(a: int) -> int:
    """`i64::abs` in release mode (`i64::MIN.abs()` wraps to `i64::MIN`)."""
    return wrap(abs(a))


# Unicode White_Space, which Rust's `str::trim` strips (Python's `str.strip` also strips
# U+001C..U+001F, which Rust keeps).
_RUST_WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


def rust_trim(s: str) -> str:
    start, end = 0, len(s)
    while start < end and s[start] in _RUST_WHITESPACE:
        start += 1
    while end > start and s[end - 1] in _RUST_WHITESPACE:
        end -= 1
    return s[start:end]


def _is_ascii_digits(s: str) -> bool:
    return s != "" and all("0" <= c <= "9" for c in s)


def _parse_int(s: str, lo: int, hi: int, signed: bool) -> Optional[int]:
    """Rust's `str::parse` for an integer type with range `lo..=hi`: an optional `+`
    (or `-` when signed) and ASCII digits, nothing else, in range."""
    digits, negative = s, False
    if s[:1] == "+":
        digits = s[1:]
    elif s[:1] == "-" and signed:
        digits, negative = s[1:], True
    if not _is_ascii_digits(digits):
        return None
    value = -int(digits) if negative else int(digits)
    return value if lo <= value <= hi else None


def parse_i64(s: str) -> Optional[int]:
    return _parse_int(s, I64_MIN, I64_MAX, True)


def parse_u8(s: str) -> Optional[int]:
    return _parse_int(s, 0, 255, False)


# --- Rust `{:?}` of strings and the booking error, for the log ---------------------------


def rust_debug_str(s: str) -> str:
    """`format!("{s:?}")`: quoted, with Rust's escapes (approximating Rust's tables of
    printable and grapheme-extending characters with Python's Unicode database)."""
    out = ['"']
    for c in s:
        if c == "\0":
            out.append("\\0")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif c == "\n":
            out.append("\\n")
        elif c == "\\":
            out.append("\\\\")
        elif c == '"':
            out.append('\\"')
        elif (c != " " and not c.isprintable()) or unicodedata.category(c) in ("Mn", "Me"):
            out.append("\\u{%x}" % ord(c))
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


# --- Contract date-times (guest-sdk/src/codec.rs) ------------------------------------

MINUTE = 60_000
DAY = 24 * 60 * MINUTE


def _is_leap(y: int) -> bool:
    return (y % 4 == 0 and y % 100 != 0) or y % 400 == 0


def _days_in_month(y: int, m: int) -> int:
    if m == 2:
        return 29 if _is_leap(y) else 28
    return 30 if m in (4, 6, 9, 11) else 31


def _days_from_civil(y: int, m: int, d: int) -> int:
    y = y - 1 if m <= 2 else y
    era = y // 400
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def _civil_from_days(z: int) -> Tuple[int, int, int]:
    z = z + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (1 if m <= 2 else 0)
    return y, m, d


def parse_datetime(s: str) -> Optional[int]:
    """`YYYY-MM-DDTHH:MM:SS[.fraction]Z` (UTC) as milliseconds since the Unix epoch;
    anything else is None. Works on the UTF-8 bytes, as the Rust SDK does."""
    b = s.encode("utf-8")
    if len(b) < 20 or b[4:5] != b"-" or b[7:8] != b"-" or b[10:11] != b"T":
        return None
    if b[13:14] != b":" or b[16:17] != b":" or b[-1:] != b"Z":
        return None

    def num(lo: int, hi: int) -> Optional[int]:
        part = b[lo:hi]
        if not all(0x30 <= c <= 0x39 for c in part):
            return None
        return int(part) if part else None

    fields = [num(0, 4), num(5, 7), num(8, 10), num(11, 13), num(14, 16), num(17, 19)]
    if any(v is None for v in fields):
        return None
    year, month, day, hour, minute, second = fields
    millis = 0
    rest = b[19:-1]
    if rest:
        if rest[:1] != b".":
            return None
        frac = rest[1:]
        if not frac or len(frac) > 9 or not all(0x30 <= c <= 0x39 for c in frac):
            return None
        millis = int((frac + b"00")[:3])
    if not 1 <= month <= 12 or day < 1 or day > _days_in_month(year, month):
        return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    days = _days_from_civil(year, month, day)
    return ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis


def format_datetime(millis: int) -> str:
    """Milliseconds since the Unix epoch as `2024-06-18T17:00:00.000Z`."""
    days, rem = millis // DAY, millis % DAY
    y, m, d = _civil_from_days(days)
    h, rem = rem // 3_600_000, rem % 3_600_000
    mi, rem = rem // 60_000, rem % 60_000
    s, ms = rem // 1000, rem % 1000
    return f"{y:04d}-{m:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{ms:03d}Z"


# --- Timestamps as i64 milliseconds (guest-sdk/src/time.rs) -----------------------------


def plus_minutes(t: int, minutes: int) -> int:
    return wrap(t + wrap(minutes * MINUTE))


def minutes_until(t: int, later: int) -> int:
    return wrap(later - t) // MINUTE


def local_day(t: int, off: int) -> int:
    return wrap(t + wrap(off * MINUTE)) // DAY


def local_minute_of_day(t: int, off: int) -> int:
    return wrap(t + wrap(off * MINUTE)) % DAY // MINUTE


def local_weekday(t: int, off: int) -> int:
    """ISO weekday (1 = Monday ... 7 = Sunday); 1970-01-01 was a Thursday."""
    return (local_day(t, off) + 3) % 7 + 1


def from_local_day(day: int, off: int) -> int:
    return wrap(wrap(day * DAY) - wrap(off * MINUTE))


@dataclass(frozen=True)
class Slot:
    start: int
    end: int

    def minutes(self) -> int:
        return minutes_until(self.start, self.end)


def slot_from_period(period) -> Optional[Slot]:
    if period is None or period.start is None or period.end is None:
        return None
    start, end = parse_datetime(period.start), parse_datetime(period.end)
    if start is None or end is None:
        return None
    return Slot(start, end)


def job_slot(job) -> Optional[Slot]:
    """The first TimeConstraints entry with a parsable period."""
    for tc in job.time_constraints or []:
        slot = slot_from_period(tc.period)
        if slot is not None:
            return slot
    return None


def job_slots(job) -> List[Slot]:
    """Every parsable TimeConstraints period, in order."""
    slots = [slot_from_period(tc.period) for tc in job.time_constraints or []]
    return [s for s in slots if s is not None]


# --- Errors (the WIT booking-error, as Python values) ---------------------------------


@dataclass
class Param:
    name: str
    reason: str
    path: str
    value: str


class Refusal(Exception):
    """A booking-error: `kind` is "invalid-request" (with `message` and `params`),
    "slot-unavailable" or "internal" (with `message`)."""

    def __init__(self, kind: str, message: str, params: Optional[List[Param]] = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.params = params or []

    def __repr__(self) -> str:
        return f"Refusal({self.kind!r}, {self.message!r}, {self.params!r})"

    def rust_debug(self) -> str:
        """`format!("{e:?}")` of the Rust SDK's `BookingError`."""
        if self.kind == "invalid-request":
            params = ", ".join(
                "InvalidParam { name: %s, reason: %s, path: %s, value: %s }"
                % tuple(rust_debug_str(x) for x in (p.name, p.reason, p.path, p.value))
                for p in self.params
            )
            return "BookingError::InvalidRequest(InvalidRequestError { message: %s, params: [%s] })" % (
                rust_debug_str(self.message),
                params,
            )
        case = {"slot-unavailable": "SlotUnavailable", "internal": "Internal"}[self.kind]
        return f"BookingError::{case}({rust_debug_str(self.message)})"


def invalid(path: str, reason: str, value: str) -> Refusal:
    """`BookingError::invalid`: one problem at a JSON path; the param's name is the path's
    last segment without its index."""
    tail = path.rsplit(".", 1)[-1].split("[", 1)[0]
    name = tail if tail not in ("", "$") else "$"
    return Refusal("invalid-request", f"{path} {reason}", [Param(name, reason, path, value)])


def slot_unavailable(message: str) -> Refusal:
    return Refusal("slot-unavailable", message)


def internal(message: str) -> Refusal:
    return Refusal("internal", message)


class KvFailure(Exception):
    """A key-value store error; `debug` is its Rust `{:?}`, e.g.
    `KvError::NotANumber("...")`."""

    def __init__(self, debug: str):
        super().__init__(debug)
        self.debug = debug


# --- The validation profile (guest-sdk/src/validate.rs) -------------------------------


def _blank(s: Optional[str]) -> bool:
    return s is None or rust_trim(s) == ""


def profile(job) -> None:
    """Raises an invalid-request Refusal listing every problem: an Account with AccountNum
    or Name, a Location with LocationNum or Address, a non-empty OriginalOrderNum, and at
    least one TimeConstraints entry whose Period parses with Start < End."""
    params: List[Param] = []

    def add(name: str, path: str, reason: str, value: str) -> None:
        params.append(Param(name, reason, path, value))

    a = job.account
    if a is None:
        add("Account", "$.Account", "is required", "")
    elif _blank(a.account_num) and _blank(a.name):
        add("Account", "$.Account", "needs AccountNum (managed account) or Name (ad-hoc account)", "")
    loc = job.location
    if loc is None:
        add("Location", "$.Location", "is required", "")
    elif _blank(loc.location_num) and loc.address is None:
        add(
            "Location",
            "$.Location",
            "needs LocationNum (managed location) or Address (ad-hoc location)",
            "",
        )
    if _blank(job.original_order_num):
        add(
            "OriginalOrderNum",
            "$.OriginalOrderNum",
            "is required and must not be empty",
            job.original_order_num or "",
        )
    _check_slots(job, add)
    if params:
        raise Refusal("invalid-request", f"{len(params)} properties are invalid", params)


def _check_slots(job, add) -> None:
    entries = job.time_constraints or []
    if not entries:
        add(
            "TimeConstraints",
            "$.TimeConstraints",
            "at least one slot with Period.Start and Period.End is required",
            "",
        )
        return
    for i, tc in enumerate(entries):
        period = tc.period
        if period is None:
            add("Period", f"$.TimeConstraints[{i}].Period", "is required", "")
            continue
        complete = True
        for name, value in (("Start", period.start), ("End", period.end)):
            if _blank(value):
                complete = False
                add(name, f"$.TimeConstraints[{i}].Period.{name}", "is required", value or "")
        if not complete:
            continue
        slot = slot_from_period(period)
        if slot is None:
            add(
                "Period",
                f"$.TimeConstraints[{i}].Period",
                "Start and End must be UTC ISO-8601 date-times",
                "",
            )
        elif not slot.start < slot.end:
            add(
                "End",
                f"$.TimeConstraints[{i}].Period.End",
                "must be after Period.Start",
                period.end or "",
            )


# --- The rules (plugins/capacity-booker/src/lib.rs) -----------------------------------


def clock_minutes(text: str) -> Optional[int]:
    """`HH:MM` as minutes since midnight, at most 24:00."""
    h, sep, m = rust_trim(text).partition(":")
    if not sep:
        return None
    h, m = parse_i64(h), parse_i64(m)
    if h is None or m is None:
        return None
    if 0 <= h <= 24 and 0 <= m < 60 and h * 60 + m <= 24 * 60:
        return h * 60 + m
    return None


DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass
class Booked:
    """A booking's answer: the OrderNum and the parts orders `(PartOrderNum, parts)`."""

    order_num: str
    ordered_parts: List[Tuple[str, List[str]]]


@dataclass
class Offered:
    """One open slot of a search's answer (TimeConstraint of type 1001)."""

    id: str
    desc: str
    start: str
    end: str
    type: str = "1001"


@dataclass
class Found:
    """A search's answer."""

    status_msg: str
    time_constraints: List[Offered]


@dataclass
class Rules:
    now: int = 0
    utc_offset_minutes: int = 0
    open: int = 8 * 60
    close: int = 18 * 60
    closed_weekdays: List[int] = field(default_factory=lambda: [6, 7])
    closed_days: List[int] = field(default_factory=list)
    min_slot_minutes: int = 60
    slot_minutes: int = 240
    max_slots: int = 10
    order_prefix: str = "FU-"
    daily_capacity: Optional[int] = None
    # "sequence": the store's gap-free sequence; "key": derived from the idempotency key.
    order_numbers: str = "sequence"

    @classmethod
    def from_config(cls, get: Callable[[str], Optional[str]], wall_clock: int) -> "Rules":
        """Reads the settings through `get` (the host's config service in production)."""
        d = cls()

        def parsed(key: str) -> Optional[int]:
            v = get(key)
            return None if v is None else parse_i64(rust_trim(v))

        def listed(key: str) -> Optional[List[str]]:
            v = get(key)
            if v is None:
                return None
            return [t for t in (rust_trim(s) for s in v.split(",")) if t != ""]

        def first(*values):
            for v in values:
                if v is not None:
                    return v
            return None

        now_text = get("now")
        now = parse_datetime(rust_trim(now_text)) if now_text is not None else None
        open_text, close_text = get("open"), get("close")
        weekdays = listed("closed_weekdays")
        closed_days = []
        for date in listed("closed_dates") or []:
            t = parse_datetime(f"{date}T00:00:00Z")
            if t is not None:
                closed_days.append(local_day(t, 0))
        slot_minutes = parsed("slot_minutes")
        max_slots = parsed("max_slots")
        capacity = parsed("daily_capacity")
        prefix = get("order_prefix")
        numbers = get("order_numbers")
        return cls(
            now=first(now, wall_clock),
            utc_offset_minutes=first(parsed("utc_offset_minutes"), d.utc_offset_minutes),
            open=first(clock_minutes(open_text) if open_text is not None else None, d.open),
            close=first(clock_minutes(close_text) if close_text is not None else None, d.close),
            closed_weekdays=(
                [w for w in (parse_u8(s) for s in weekdays) if w is not None]
                if weekdays is not None
                else d.closed_weekdays
            ),
            closed_days=closed_days,
            min_slot_minutes=first(parsed("min_slot_minutes"), d.min_slot_minutes),
            slot_minutes=slot_minutes if slot_minutes is not None and slot_minutes > 0 else d.slot_minutes,
            max_slots=max_slots if max_slots is not None and 0 <= max_slots <= U32_MAX else d.max_slots,
            order_prefix=prefix if prefix is not None else d.order_prefix,
            daily_capacity=capacity if capacity is not None and capacity >= 0 else None,
            order_numbers="key" if numbers is not None and rust_trim(numbers) == "key" else d.order_numbers,
        )

    def is_closed_day(self, at: int) -> bool:
        off = self.utc_offset_minutes
        return local_weekday(at, off) in self.closed_weekdays or local_day(at, off) in self.closed_days

    def _outside_hours(self, slot: Slot) -> Optional[str]:
        off = self.utc_offset_minutes
        start = local_minute_of_day(slot.start, off)
        start_day, end_day = local_day(slot.start, off), local_day(slot.end, off)
        same_day = start_day == end_day or (
            local_minute_of_day(slot.end, off) == 0 and end_day == wrap(start_day + 1)
        )
        end = wrap(start + slot.minutes()) if same_day else I64_MAX
        if start < self.open or end > self.close:
            return "slot %s\u2013%s is outside business hours %02d:%02d\u2013%02d:%02d" % (
                format_datetime(slot.start),
                format_datetime(slot.end),
                self.open // 60,
                self.open % 60,
                self.close // 60,
                self.close % 60,
            )
        if slot.minutes() < self.min_slot_minutes:
            return "slot of %d minutes is shorter than the minimum of %d minutes" % (
                slot.minutes(),
                self.min_slot_minutes,
            )
        return None

    def refuse(self, slot: Slot) -> Optional[str]:
        """Why `slot` cannot be booked, if it cannot."""
        if slot.start < self.now:
            return f"slot starting {format_datetime(slot.start)} is in the past"
        if self.is_closed_day(slot.start):
            return f"slot starting {format_datetime(slot.start)} falls on a closed day"
        return self._outside_hours(slot)

    def describe(self, slot: Slot) -> str:
        """A slot as a person reads it: `Mon 2024-06-17 08:00–12:00 (UTC-04:00)`."""
        off = self.utc_offset_minutes
        start = format_datetime(plus_minutes(slot.start, off))
        end = format_datetime(plus_minutes(slot.end, off))
        weekday = DAYS[local_weekday(slot.start, off) - 1]
        sign = "-" if off < 0 else "+"
        a = rust_abs(off)
        return "%s %s %s\u2013%s (UTC%s%02d:%02d)" % (
            weekday,
            start[:10],
            start[11:16],
            end[11:16],
            sign,
            tdiv(a, 60),
            trem(a, 60),
        )

    def book(self, idempotency_key: str, job, kv) -> Booked:
        """Books `job`: the follow-up order number and the parts orders. `kv` has
        `increment(key, delta) -> int`, raising KvFailure. Raises Refusal."""
        profile(job)
        slot = job_slot(job)
        if slot is None:
            raise invalid("$.TimeConstraints", "has no bookable slot", "")
        reason = self.refuse(slot)
        if reason is not None:
            raise slot_unavailable(reason)

        def increment(key: str) -> int:
            try:
                return kv.increment(key, 1)
            except KvFailure as e:
                raise internal(f"key-value store: {e.debug}") from None

        if self.daily_capacity is not None:
            capacity = self.daily_capacity
            loc = job.location
            area = loc.service_area_id if loc is not None else None
            if not area:
                area = "default"
            day = format_datetime(from_local_day(local_day(slot.start, self.utc_offset_minutes), 0))[:10]
            taken = increment(f"capacity/{area}/{day}")
            if taken > capacity:
                # The failed booking's writes are dropped: the count stays at capacity.
                raise slot_unavailable(
                    f"service area {area} is fully booked on {day} ({capacity} bookings)"
                )
        if self.order_numbers == "key":
            order_num = f"{self.order_prefix}{short_id(idempotency_key, 'order')}"
        else:
            order_num = f"{self.order_prefix}{increment('sequence/order'):08d}"
        return Booked(
            order_num=order_num,
            ordered_parts=parts_orders(idempotency_key, job.required_parts or []),
        )

    def _any_slot_fits_a_day(self) -> bool:
        """Whether any slot of a day's grid passes the hours and length checks (which are
        the same every day when nothing wraps)."""
        off = self.utc_offset_minutes
        midnight = from_local_day(0, off)
        start = plus_minutes(midnight, self.open)
        while True:
            end = plus_minutes(start, self.slot_minutes)
            if end > plus_minutes(midnight, self.close):
                return False
            if self._outside_hours(Slot(start, end)) is None:
                return True
            start = end

    def search(self, query) -> Found:
        """The open slots inside the query's windows. Raises Refusal."""
        windows = job_slots(query)
        if not windows:
            raise invalid(
                "$.TimeConstraints",
                "at least one availability window with Period.Start and Period.End is required",
                "",
            )
        off = self.utc_offset_minutes
        # Shortcuts that change nothing but the time taken, taken only where no i64
        # arithmetic can wrap: days before today hold only past slots (every slot of a day
        # starts before the next local midnight), and when no slot of the day grid fits
        # business hours and the minimum length, no day has any.
        sane = abs(off) <= 10**8 and self.slot_minutes <= 10**8 and abs(self.now) <= 10**15
        today = local_day(self.now, off)
        nothing_fits = sane and not self._any_slot_fits_a_day()
        found: List[Slot] = []
        full = False
        for window in windows if not nothing_fits else []:
            sane_window = sane and abs(window.start) <= 10**15 and abs(window.end) <= 10**15
            day = local_day(window.start, off)
            if sane_window and day < today:
                day = today
            while from_local_day(day, off) < window.end:
                midnight = from_local_day(day, off)
                start = plus_minutes(midnight, self.open)
                while True:
                    end = plus_minutes(start, self.slot_minutes)
                    if end > plus_minutes(midnight, self.close):
                        break
                    slot = Slot(start, end)
                    if start >= window.start and end <= window.end and self.refuse(slot) is None:
                        if len(found) == self.max_slots:
                            full = True
                            break
                        found.append(slot)
                    start = end
                if full:
                    break
                day = wrap(day + 1)
            if full:
                break
        n = len(found)
        if n == 0:
            status = "no open slots within the requested window"
        elif n == 1:
            status = "1 open slot found"
        else:
            status = f"{n} open slots found"
        return Found(
            status_msg=status,
            time_constraints=[
                Offered(
                    id=f"SLOT-{tdiv(s.start, 60_000)}",
                    desc=self.describe(s),
                    start=format_datetime(s.start),
                    end=format_datetime(s.end),
                )
                for s in found
            ],
        )


# --- Parts orders ---------------------------------------------------------------------

_FNV_OFFSET = 0xCBF2_9CE4_8422_2325
_FNV_PRIME = 0x0000_0100_0000_01B3
_U64 = (1 << 64) - 1


def fnv1a(parts: List[str]) -> int:
    """FNV-1a 64 over the parts' UTF-8 bytes, each followed by a 0xff byte."""
    h = _FNV_OFFSET
    for part in parts:
        for b in part.encode("utf-8") + b"\xff":
            h ^= b
            h = (h * _FNV_PRIME) & _U64
    return h


def short_id(key: str, purpose: str) -> str:
    return "%010d" % (fnv1a([key, purpose]) % 10_000_000_000)


def parts_orders(key: str, parts) -> List[Tuple[str, List[str]]]:
    """Groups required parts into parts orders by (ship-to location, urgency), in the
    groups' byte order; a part with SupersededParts is ordered as its replacements."""
    groups = {}
    for part in parts:
        group = (part.ship_to_location or "", part.urgency or "")
        replacements = [
            s.prod_num
            for s in part.superseded_parts or []
            if s.prod_num is not None and rust_trim(s.prod_num) != ""
        ]
        if replacements:
            numbers = replacements
        elif part.prod_num is not None and rust_trim(part.prod_num) != "":
            numbers = [part.prod_num]
        else:
            numbers = []
        entry = groups.setdefault(group, [])
        for number in numbers:
            if number not in entry:
                entry.append(number)
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0].encode("utf-8"), kv[0][1].encode("utf-8")))
    return [
        ("PO-" + short_id(key, f"parts/{ship_to}/{urgency}"), numbers)
        for (ship_to, urgency), numbers in ordered
        if numbers
    ]


# --- Logging (guest-sdk log::outcome) -------------------------------------------------


def outcome(answer) -> Tuple[str, str]:
    """The log line of a booking's outcome: ("info", "booked ORDER") or
    ("warn", "refused: <BookingError as Rust's {:?}>")."""
    if isinstance(answer, Refusal):
        return "warn", f"refused: {answer.rust_debug()}"
    return "info", f"booked {answer.order_num}"
