"""The capacity booker as a component: wires the WIT world `booker-scheduler` to the rules
in `rules.py` (the same rules as plugins/capacity-booker, in Python).

Built with componentize-py (see build.sh). A fresh instance serves each request, so the
settings are read per request, as the Rust plugin does.
"""

import time

import rules
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config, kv, log

try:
    from wit_world.imports import types
except ImportError:
    # In the worlds with outbound HTTP, wasi:http brings a `types` of its own, so the
    # contract's records are named after their package.
    from wit_world.imports import servicemobility_booking_types as types
from wit_world.imports.log import Level

_LEVELS = {"info": Level.INFO, "warn": Level.WARN}


def _wall_clock() -> int:
    return time.time_ns() // 1_000_000


def _settings() -> rules.Rules:
    return rules.Rules.from_config(config.get, _wall_clock())


class _Store:
    """The host's key-value store as the rules see it: failures become KvFailure with the
    Rust SDK's `{:?}` of the error (e.g. `KvError::NotANumber("...")`)."""

    def increment(self, key: str, delta: int) -> int:
        try:
            return kv.increment(key, delta)
        except Err as e:
            err = e.value
            case = type(err).__name__.split("_", 1)[-1]  # KvError_NotANumber -> NotANumber
            raise rules.KvFailure(f"KvError::{case}({rules.rust_debug_str(str(err.value))})") from None


def _booking_error(refusal: rules.Refusal) -> types.BookingError:
    if refusal.kind == "invalid-request":
        return types.BookingError_InvalidRequest(
            types.InvalidRequestError(
                message=refusal.message,
                params=[
                    types.InvalidParam(name=p.name, reason=p.reason, path=p.path, value=p.value)
                    for p in refusal.params
                ],
            )
        )
    if refusal.kind == "slot-unavailable":
        return types.BookingError_SlotUnavailable(refusal.message)
    return types.BookingError_Internal(refusal.message)


def _unexpected(e: BaseException) -> rules.Refusal:
    # The Rust plugin has no such case (a panic would trap the instance); answering
    # `internal` keeps the instance's failure readable instead of a trap.
    return rules.internal(f"capacity-booker-py: unexpected {type(e).__name__}: {e}")


class Followup(exports.Followup):
    def book(self, ctx: types.RequestContext, job: types.BookJob) -> types.BookJobResponse:
        try:
            answer = _settings().book(ctx.idempotency_key, job, _Store())
        except rules.Refusal as refusal:
            answer = refusal
        except Exception as e:  # noqa: BLE001 - never trap the instance
            answer = _unexpected(e)
        try:
            level, message = rules.outcome(answer)
            log.log(_LEVELS[level], message)
        except Exception:  # noqa: BLE001 - logging must not change the answer
            pass
        if isinstance(answer, rules.Refusal):
            raise Err(_booking_error(answer))
        return types.BookJobResponse(
            order_num=answer.order_num,
            ordered_parts=[
                types.OrderedPart(part_order_num=num, parts=list(parts))
                for num, parts in answer.ordered_parts
            ],
        )


class Appointments(exports.Appointments):
    def search(self, ctx: types.RequestContext, query: types.BookJob) -> types.AppointmentSearchResponse:
        try:
            found = _settings().search(query)
        except rules.Refusal as refusal:
            raise Err(_booking_error(refusal))
        except Exception as e:  # noqa: BLE001 - never trap the instance
            raise Err(_booking_error(_unexpected(e)))
        return types.AppointmentSearchResponse(
            status_msg=found.status_msg,
            time_constraints=[
                types.TimeConstraint(
                    id=o.id,
                    desc=o.desc,
                    type=o.type,
                    period=types.Period(start=o.start, end=o.end, extensions=None),
                    delete=None,
                    extensions=None,
                )
                for o in found.time_constraints
            ],
        )
