"""Unit tests of rules.py: plain Python, no componentize-py or WIT bindings needed.

    python3 -m unittest -v test_rules     (from this directory)

They port the Rust tests of plugins/capacity-booker and of the guest SDK (validate, time)
and add the Rust-semantics details the port must keep.
"""

import json
import unittest
from types import SimpleNamespace

import rules
from rules import Rules, Slot, parse_datetime, format_datetime

# --- Requests as the host hands them over: objects with the WIT records' fields --------

_RECORDS = {
    # JSON key -> (attribute, record kind of the value or None)
    "Account": ("account", "record"),
    "AccountNum": ("account_num", None),
    "Name": ("name", None),
    "Location": ("location", "record"),
    "LocationNum": ("location_num", None),
    "Address": ("address", "record"),
    "ServiceAreaID": ("service_area_id", None),
    "OriginalOrderNum": ("original_order_num", None),
    "RequiredParts": ("required_parts", "list"),
    "ProdNum": ("prod_num", None),
    "ShipToLocation": ("ship_to_location", None),
    "Urgency": ("urgency", None),
    "SupersededParts": ("superseded_parts", "list"),
    "TimeConstraints": ("time_constraints", "list"),
    "Period": ("period", "record"),
    "Start": ("start", None),
    "End": ("end", None),
}
_FIELDS = {
    "job": ["account", "location", "original_order_num", "required_parts", "time_constraints"],
    "account": ["account_num", "name"],
    "location": ["location_num", "address", "service_area_id"],
    "required_parts": ["prod_num", "ship_to_location", "urgency", "superseded_parts"],
    "superseded_parts": ["prod_num"],
    "time_constraints": ["period"],
    "period": ["start", "end"],
    "address": [],
}


def _record(kind, obj):
    values = {f: None for f in _FIELDS[kind]}
    for key, value in obj.items():
        attr, sub = _RECORDS[key]
        if sub == "record":
            value = _record(attr, value)
        elif sub == "list":
            value = [_record(attr, v) for v in value]
        values[attr] = value
    return SimpleNamespace(**values)


def decode(text):
    return _record("job", json.loads(text))


class MemoryKv:
    """The SDK's native stand-in for the host's store: decimal integers per key."""

    def __init__(self):
        self.values = {}

    def increment(self, key, delta):
        current = self.values.get(key, "0")
        n = rules.parse_i64(rules.rust_trim(current))
        if n is None or not rules.I64_MIN <= n + delta <= rules.I64_MAX:
            raise rules.KvFailure(f"KvError::NotANumber({rules.rust_debug_str(repr(key))})")
        self.values[key] = str(n + delta)
        return n + delta


def config(**pairs):
    return Rules.from_config(pairs.get, 0)


def new_york(**more):
    return config(now="2024-06-17T12:00:00Z", utc_offset_minutes="-240", closed_dates="2024-07-04", **more)


def slot(start, end):
    return Slot(parse_datetime(start), parse_datetime(end))


def job(start, end, parts="[]", extra=""):
    return decode(
        '{"Account":{"AccountNum":"A"},"Location":{"LocationNum":"L"%s},'
        '"OriginalOrderNum":"WO-1","RequiredParts":%s,'
        '"TimeConstraints":[{"Period":{"Start":"%s","End":"%s"}}]}' % (extra, parts, start, end)
    )


def paths(refusal):
    assert refusal.kind == "invalid-request", refusal
    return [p.path for p in refusal.params]


class CapacityBookerTests(unittest.TestCase):
    """The Rust plugin's tests (plugins/capacity-booker/src/lib.rs)."""

    def test_books_an_open_weekday_slot(self):
        self.assertIsNone(new_york().refuse(slot("2024-06-18T13:00:00Z", "2024-06-18T17:00:00Z")))

    def test_refuses_past_closed_and_out_of_hours_slots(self):
        r = new_york()
        cases = [
            (("2024-06-10T13:00:00Z", "2024-06-10T17:00:00Z"), "in the past"),
            (("2024-06-22T13:00:00Z", "2024-06-22T17:00:00Z"), "closed day"),
            (("2024-07-04T13:00:00Z", "2024-07-04T17:00:00Z"), "closed day"),
            (("2024-06-18T11:00:00Z", "2024-06-18T13:00:00Z"), "business hours"),
            (("2024-06-18T20:00:00Z", "2024-06-18T23:00:00Z"), "business hours"),
            (("2024-06-18T20:00:00Z", "2024-06-19T13:00:00Z"), "business hours"),
            (("2024-06-18T13:00:00Z", "2024-06-18T13:30:00Z"), "shorter than"),
        ]
        for (start, end), reason in cases:
            why = r.refuse(slot(start, end)) or ""
            self.assertIn(reason, why, start)

    def test_refusal_messages(self):
        r = new_york()
        self.assertEqual(
            r.refuse(slot("2024-06-10T13:00:00Z", "2024-06-10T17:00:00Z")),
            "slot starting 2024-06-10T13:00:00.000Z is in the past",
        )
        self.assertEqual(
            r.refuse(slot("2024-06-22T13:00:00Z", "2024-06-22T17:00:00Z")),
            "slot starting 2024-06-22T13:00:00.000Z falls on a closed day",
        )
        self.assertEqual(
            r.refuse(slot("2024-06-18T11:00:00Z", "2024-06-18T13:00:00Z")),
            "slot 2024-06-18T11:00:00.000Z\u20132024-06-18T13:00:00.000Z is outside business hours 08:00\u201318:00",
        )
        self.assertEqual(
            r.refuse(slot("2024-06-18T13:00:00Z", "2024-06-18T13:30:00Z")),
            "slot of 30 minutes is shorter than the minimum of 60 minutes",
        )

    def test_order_numbers_come_from_a_gap_free_sequence(self):
        kv = MemoryKv()
        r = new_york()
        j = job("2024-06-18T13:00:00Z", "2024-06-18T17:00:00Z")
        a = r.book("key-1", j, kv)
        b = r.book("key-2", j, kv)
        self.assertEqual(a.order_num, "FU-00000001")
        self.assertEqual(b.order_num, "FU-00000002")
        self.assertEqual(a.ordered_parts, [])

    def test_a_full_day_of_a_service_area_is_unavailable(self):
        kv = MemoryKv()
        r = new_york(daily_capacity="2")
        j = job("2024-06-18T13:00:00Z", "2024-06-18T17:00:00Z")
        r.book("a", j, kv)
        r.book("b", j, kv)
        with self.assertRaises(rules.Refusal) as full:
            r.book("c", j, kv)
        self.assertEqual(full.exception.kind, "slot-unavailable")
        self.assertEqual(
            full.exception.message, "service area default is fully booked on 2024-06-18 (2 bookings)"
        )
        self.assertEqual(kv.values["capacity/default/2024-06-18"], "3")
        # Another day has its own capacity, another area too.
        r.book("d", job("2024-06-19T13:00:00Z", "2024-06-19T17:00:00Z"), kv)
        north = job("2024-06-18T13:00:00Z", "2024-06-18T17:00:00Z", extra=',"ServiceAreaID":"NORTH"')
        self.assertEqual(r.book("e", north, kv).order_num, "FU-00000004")
        self.assertEqual(kv.values["capacity/NORTH/2024-06-18"], "1")

    def test_a_store_failure_is_internal(self):
        kv = MemoryKv()
        kv.values["sequence/order"] = "x"
        with self.assertRaises(rules.Refusal) as e:
            new_york().book("k", job("2024-06-18T13:00:00Z", "2024-06-18T17:00:00Z"), kv)
        self.assertEqual(e.exception.kind, "internal")
        self.assertTrue(e.exception.message.startswith("key-value store: KvError::NotANumber("))

    def test_parts_are_grouped_and_superseded_parts_replace_the_original(self):
        parts = """[
            {"ProdNum":"P1","ShipToLocation":"1002","Urgency":"1001"},
            {"ProdNum":"P2","ShipToLocation":"1002","Urgency":"1001",
             "SupersededParts":[{"ProdNum":"P2-NEW"}]},
            {"ProdNum":"P3","ShipToLocation":"1001","Urgency":"1001"},
            {"ProdNum":"P1","ShipToLocation":"1002","Urgency":"1001"}]"""
        j = job("2024-06-18T13:00:00Z", "2024-06-18T17:00:00Z", parts)
        orders = new_york().book("k", j, MemoryKv()).ordered_parts
        self.assertEqual(len(orders), 2)
        self.assertEqual(orders[0][1], ["P3"])
        self.assertEqual(orders[1][1], ["P1", "P2-NEW"])
        self.assertNotEqual(orders[0][0], orders[1][0])
        self.assertEqual(orders[0][0], "PO-" + rules.short_id("k", "parts/1001/1001"))

    def test_groups_sort_by_utf8_bytes_and_empty_groups_are_dropped(self):
        parts = """[{"ProdNum":"P1","ShipToLocation":"\u00e4"},{"ProdNum":"P2","ShipToLocation":"z"},
            {"ProdNum":"P3"},{"ProdNum":" ","ShipToLocation":"blank"},{"ShipToLocation":"none"},
            {"ProdNum":"P4","ShipToLocation":"z","Urgency":""}]"""
        orders = rules.parts_orders("k", decode('{"RequiredParts":%s}' % parts).required_parts)
        self.assertEqual([o[1] for o in orders], [["P3"], ["P2", "P4"], ["P1"]])

    def test_refuses_a_job_without_a_slot_with_its_path(self):
        j = job("2024-06-18T13:00:00Z", "2024-06-18T17:00:00Z")
        j.time_constraints = []
        with self.assertRaises(rules.Refusal) as e:
            new_york().book("k", j, MemoryKv())
        self.assertEqual(e.exception.params[0].path, "$.TimeConstraints")

    def test_searches_open_slots_inside_the_window(self):
        answer = new_york().search(job("2024-06-21T12:00:00Z", "2024-06-24T22:00:00Z"))
        self.assertEqual(
            [o.start for o in answer.time_constraints],
            [
                "2024-06-21T12:00:00.000Z",
                "2024-06-21T16:00:00.000Z",
                "2024-06-24T12:00:00.000Z",
                "2024-06-24T16:00:00.000Z",
            ],
        )
        self.assertEqual(answer.status_msg, "4 open slots found")
        first = answer.time_constraints[0]
        self.assertEqual(first.desc, "Fri 2024-06-21 08:00\u201312:00 (UTC-04:00)")
        self.assertEqual(first.id, "SLOT-%d" % (parse_datetime("2024-06-21T12:00:00Z") // 60_000))
        self.assertEqual(first.type, "1001")

    def test_search_stops_at_max_slots(self):
        r = config(now="2024-06-17T00:00:00Z", max_slots="3")
        q = job("2024-06-17T00:00:00Z", "2024-07-17T00:00:00Z")
        self.assertEqual(len(r.search(q).time_constraints), 3)

    def test_search_messages_and_refusal(self):
        r = new_york()
        self.assertEqual(
            r.search(job("2024-06-22T00:00:00Z", "2024-06-23T00:00:00Z")).status_msg,
            "no open slots within the requested window",
        )
        self.assertEqual(
            r.search(job("2024-06-18T12:00:00Z", "2024-06-18T16:00:00Z")).status_msg, "1 open slot found"
        )
        with self.assertRaises(rules.Refusal) as e:
            r.search(decode("{}"))
        self.assertEqual(
            e.exception.message,
            "$.TimeConstraints at least one availability window with Period.Start and Period.End is required",
        )
        self.assertEqual(e.exception.params[0].name, "TimeConstraints")

    def test_huge_windows_answer_quickly(self):
        r = new_york()
        q = job("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z")
        self.assertEqual(len(r.search(q).time_constraints), 10)
        none_fit = new_york(min_slot_minutes="300")
        self.assertEqual(none_fit.search(q).time_constraints, [])

    def test_slot_ids_before_1970_truncate_toward_zero(self):
        r = config(now="1969-12-29T00:00:00Z", closed_weekdays="", open="00:00", slot_minutes="90")
        first = r.search(job("1969-12-31T00:00:00Z", "1970-01-01T00:00:00Z")).time_constraints[0]
        self.assertEqual(first.id, "SLOT-%d" % -1440)


class ConfigTests(unittest.TestCase):
    def test_defaults(self):
        r = Rules.from_config(lambda _key: None, 1234)
        self.assertEqual(
            (r.now, r.utc_offset_minutes, r.open, r.close, r.closed_weekdays, r.closed_days),
            (1234, 0, 480, 1080, [6, 7], []),
        )
        self.assertEqual(
            (r.min_slot_minutes, r.slot_minutes, r.max_slots, r.order_prefix, r.daily_capacity),
            (60, 240, 10, "FU-", None),
        )

    def test_values_parse_as_rust_parses_them(self):
        r = config(
            now=" 2024-06-17T00:00:00Z\n",
            utc_offset_minutes="+330",
            open=" 09:30 ",
            close="24:00",
            closed_weekdays="+7, 1, x, 300, -1,,",
            closed_dates="2024-06-18, bogus,,1970-01-02",
            min_slot_minutes="-5",
            slot_minutes="90",
            max_slots="4294967295",
            order_prefix=" ACME-",
            daily_capacity="0",
        )
        self.assertEqual(r.now, parse_datetime("2024-06-17T00:00:00Z"))
        self.assertEqual((r.utc_offset_minutes, r.open, r.close), (330, 570, 1440))
        self.assertEqual(r.closed_weekdays, [7, 1])
        self.assertEqual(r.closed_days, [19892, 1])
        self.assertEqual((r.min_slot_minutes, r.slot_minutes, r.max_slots), (-5, 90, 4294967295))
        self.assertEqual((r.order_prefix, r.daily_capacity), (" ACME-", 0))

    def test_invalid_values_fall_back(self):
        r = config(
            now="garbage",
            utc_offset_minutes="1_0",
            open="25:00",
            close="8",
            closed_weekdays="",
            slot_minutes="0",
            max_slots="4294967296",  # over usize::MAX on wasm32
            daily_capacity="-3",
            min_slot_minutes="\u0661",  # not an ASCII digit
        )
        self.assertEqual((r.now, r.utc_offset_minutes, r.open, r.close), (0, 0, 480, 1080))
        self.assertEqual(r.closed_weekdays, [])  # set but empty: no closed weekdays
        self.assertEqual((r.slot_minutes, r.max_slots, r.daily_capacity, r.min_slot_minutes), (240, 10, None, 60))
        self.assertEqual(config(open="24:01").open, 480)
        self.assertEqual(config(open="8:5").open, 485)
        self.assertEqual(config(open="8 :00").open, 480)


class ValidateTests(unittest.TestCase):
    """guest-sdk/src/validate.rs's tests."""

    MINIMAL = """{"Account":{"AccountNum":"A"},"Location":{"LocationNum":"L"},
        "OriginalOrderNum":"WO-1","TimeConstraints":[{"Period":{
        "Start":"2024-06-18T13:00:00.000Z","End":"2024-06-18T17:00:00.000Z"}}]}"""

    def refusal(self, text):
        with self.assertRaises(rules.Refusal) as e:
            rules.profile(decode(text))
        return e.exception

    def test_the_minimal_example_passes(self):
        rules.profile(decode(self.MINIMAL))
        rules.profile(
            decode(
                """{"Account":{"Name":"Okafor"},"Location":{"Address":{}},
            "OriginalOrderNum":"WO-1","TimeConstraints":[{"Period":{
            "Start":"2024-06-18T13:00:00Z","End":"2024-06-18T17:00:00Z"}}]}"""
            )
        )

    def test_an_empty_job_names_every_missing_field(self):
        e = self.refusal("{}")
        self.assertEqual(paths(e), ["$.Account", "$.Location", "$.OriginalOrderNum", "$.TimeConstraints"])
        self.assertEqual(e.message, "4 properties are invalid")
        self.assertEqual([p.name for p in e.params], ["Account", "Location", "OriginalOrderNum", "TimeConstraints"])

    def test_slots_need_both_ends_in_order(self):
        e = self.refusal(
            """{"Account":{"AccountNum":"A"},"Location":{"LocationNum":"L"},
            "OriginalOrderNum":"WO-1","TimeConstraints":[
            {"Period":{"Start":"2024-06-18T13:00:00Z"}},
            {"Period":{"Start":"2024-06-18T13:00:00Z","End":"2024-06-18T12:00:00Z"}},
            {"Desc":"no period"}]}""".replace('{"Desc":"no period"}', "{}")
        )
        self.assertEqual(
            paths(e),
            ["$.TimeConstraints[0].Period.End", "$.TimeConstraints[1].Period.End", "$.TimeConstraints[2].Period"],
        )
        self.assertEqual(e.params[1].value, "2024-06-18T12:00:00Z")

    def test_blank_identifiers_do_not_count(self):
        t = self.MINIMAL.replace('"AccountNum":"A"', '"AccountNum":"\u3000 "').replace(
            '"OriginalOrderNum":"WO-1"', '"OriginalOrderNum":""'
        )
        self.assertEqual(paths(self.refusal(t)), ["$.Account", "$.OriginalOrderNum"])

    def test_rust_trim_is_not_python_strip(self):
        # U+001C is whitespace to Python's str.strip, not to Rust's str::trim.
        t = self.MINIMAL.replace('"OriginalOrderNum":"WO-1"', '"OriginalOrderNum":"\\u001c"')
        rules.profile(decode(t))

    def test_invalid_names_the_last_path_segment(self):
        e = rules.invalid("$.TimeConstraints[0].Period.Start", "is bad", "v")
        self.assertEqual(e.message, "$.TimeConstraints[0].Period.Start is bad")
        self.assertEqual((e.params[0].name, e.params[0].path, e.params[0].value), ("Start", "$.TimeConstraints[0].Period.Start", "v"))
        self.assertEqual(rules.invalid("$.RequiredParts[2]", "x", "").params[0].name, "RequiredParts")
        self.assertEqual(rules.invalid("$", "x", "").params[0].name, "$")


class TimeTests(unittest.TestCase):
    """guest-sdk/src/time.rs's tests."""

    def test_parses_with_and_without_milliseconds(self):
        a = parse_datetime("2024-06-18T17:00:00.000Z")
        self.assertEqual(a, parse_datetime("2024-06-18T17:00:00Z"))
        self.assertEqual(a, 1_718_730_000_000)
        self.assertEqual(parse_datetime("2024-06-18T17:00:00.5Z"), a + 500)
        self.assertEqual(parse_datetime("2024-06-18T17:00:00.123456789Z"), a + 123)
        self.assertEqual(format_datetime(a), "2024-06-18T17:00:00.000Z")

    def test_refuses_what_is_not_a_contract_date_time(self):
        for bad in [
            "",
            "2024-06-18",
            "2024-06-18T17:00:00",
            "2024-06-18T17:00:00+02:00",
            "2024-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-06-18T24:00:00Z",
            "2024-06-18T17:00:00.Z",
            "2024-06-18 17:00:00Z",
            "\uff12024-06-18T17:00:00Z",
            "2024-06-18T17:00:00.1234567890Z",
            "+024-06-18T17:00:00Z",
        ]:
            self.assertIsNone(parse_datetime(bad), bad)
        self.assertIsNotNone(parse_datetime("2024-02-29T23:59:59.999Z"))

    def test_local_calendar_follows_the_offset(self):
        t = parse_datetime("2024-06-18T02:00:00Z")
        self.assertEqual(rules.local_weekday(t, 0), 2)
        self.assertEqual(rules.local_weekday(t, -240), 1)
        self.assertEqual(rules.local_minute_of_day(t, -240), 22 * 60)
        midnight = rules.from_local_day(rules.local_day(t, -240), -240)
        self.assertEqual(format_datetime(midnight), "2024-06-17T04:00:00.000Z")

    def test_date_math_round_trips_over_centuries(self):
        for millis in [0, 951_782_400_000, -2_208_988_800_000, 4_102_444_800_000, -62_167_219_200_000]:
            self.assertEqual(parse_datetime(format_datetime(millis)), millis)

    def test_describe(self):
        s = slot("2024-06-17T12:00:00Z", "2024-06-17T16:00:00Z")
        self.assertEqual(new_york().describe(s), "Mon 2024-06-17 08:00\u201312:00 (UTC-04:00)")
        self.assertEqual(config(utc_offset_minutes="330").describe(s), "Mon 2024-06-17 17:30\u201321:30 (UTC+05:30)")


class RustSemanticsTests(unittest.TestCase):
    def test_integers(self):
        self.assertEqual(rules.parse_i64("+5"), 5)
        self.assertEqual(rules.parse_i64("-5"), -5)
        for bad in ["", "+", "-", " 5", "5 ", "1_0", "0x10", "\u0665", "9223372036854775808"]:
            self.assertIsNone(rules.parse_i64(bad), bad)
        self.assertEqual(rules.parse_i64("-9223372036854775808"), rules.I64_MIN)
        self.assertIsNone(rules.parse_u8("-0"))
        self.assertIsNone(rules.parse_u8("256"))
        self.assertEqual(rules.parse_u8("+7"), 7)
        self.assertEqual(rules.wrap(rules.I64_MAX + 1), rules.I64_MIN)
        self.assertEqual((rules.tdiv(-7, 2), rules.trem(-7, 2)), (-3, -1))

    def test_fnv1a(self):
        # FNV-1a 64 of no bytes is the offset basis; of one 0xff byte, one round.
        self.assertEqual(rules.fnv1a([]), 0xCBF29CE484222325)
        self.assertEqual(rules.fnv1a([""]), ((0xCBF29CE484222325 ^ 0xFF) * 0x100000001B3) % 2**64)
        self.assertEqual(len(rules.short_id("k", "parts//")), 10)

    def test_log_lines(self):
        self.assertEqual(rules.outcome(rules.Booked("FU-00000001", [])), ("info", "booked FU-00000001"))
        self.assertEqual(
            rules.outcome(rules.slot_unavailable('a "b"\n')),
            ("warn", 'refused: BookingError::SlotUnavailable("a \\"b\\"\\n")'),
        )
        self.assertEqual(
            rules.outcome(rules.invalid("$.X", "is bad", "")),
            (
                "warn",
                'refused: BookingError::InvalidRequest(InvalidRequestError { message: "$.X is bad", '
                'params: [InvalidParam { name: "X", reason: "is bad", path: "$.X", value: "" }] })',
            ),
        )


if __name__ == "__main__":
    unittest.main()
