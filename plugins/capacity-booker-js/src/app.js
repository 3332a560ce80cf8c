// The component entry: wires the host's services (WIT imports) to the pure rules in
// ./rules.js and exports the `followup` and `appointments` interfaces of the
// `booker-scheduler` world (wit/booking.wit).
//
// Like the Rust plugin, every call reads the settings afresh (a fresh instance serves each
// request), a booking logs its outcome (`booked ORDER` at info, the refusal at warn), and a
// search logs nothing.

import { log } from 'servicemobility:booking/log@0.1.0';
import { get } from 'servicemobility:booking/config@0.1.0';
import { increment } from 'servicemobility:booking/kv@0.1.0';
import { fromConfig, outcome, isBookingError, internal } from './rules.js';

const kv = { increment };

/** A `booking-error` to throw: the rules' own, or `internal` for anything unexpected
 * (any other throw would trap the instance). */
function asBookingError(e) {
  if (isBookingError(e)) return e;
  return internal(`unexpected error: ${e && e.stack ? `${e}\n${e.stack}` : String(e)}`);
}

export const followup = {
  book(ctx, job) {
    let answer;
    let error;
    try {
      const rules = fromConfig(get, Date.now());
      answer = rules.book(ctx, job, kv);
    } catch (e) {
      error = asBookingError(e);
    }
    try {
      const [level, line] = outcome(answer, error);
      log(level, line);
    } catch (_) {
      // Logging is best effort; the answer stands.
    }
    if (error !== undefined) throw error;
    return answer;
  },
};

export const appointments = {
  search(_ctx, query) {
    try {
      return fromConfig(get, Date.now()).search(query);
    } catch (e) {
      throw asBookingError(e);
    }
  },
};
