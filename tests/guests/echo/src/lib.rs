//! Test guest: answers with what it received, so tests can see the request as the plugin
//! saw it. `OrderNum` is the Book Job encoded back to JSON by the SDK; the context travels
//! in `OrderedParts[0]`. An `OrderType` of `bad-result` makes it answer an empty `OrderNum`;
//! `count` makes it answer how many calls this instance has served (`calls=N`), so tests
//! can see whether instances are reused; `panic` makes it panic.

use followup_sdk::*;
use std::sync::atomic::{AtomicU32, Ordering};

/// Calls this instance has served: instance state that a fresh instance starts without.
static CALLS: AtomicU32 = AtomicU32::new(0);

pub struct Echo;

impl BookingPlugin for Echo {
    fn book(ctx: RequestContext, job: BookJob) -> Result<BookJobResponse, BookingError> {
        log::info("echo: booking received");
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        match job.order_type.as_deref() {
            Some("count") => {
                return Ok(BookJobResponse {
                    order_num: format!("calls={calls}"),
                    ordered_parts: vec![],
                });
            }
            Some("panic") => panic!("echo: asked to panic"),
            _ => {}
        }
        if job.order_type.as_deref() == Some("bad-result") {
            return Ok(BookJobResponse {
                order_num: String::new(),
                ordered_parts: vec![],
            });
        }
        let order_num = json::encode::<BookJob>(&job)
            .map_err(|e| BookingError::internal(e.to_string()))?
            .to_string();
        let claims = ctx
            .claims
            .as_ref()
            .map(|c| c.raw.clone())
            .unwrap_or_default();
        let context = vec![
            format!("work-order-id={}", ctx.work_order_id.unwrap_or_default()),
            format!("route={}", ctx.route),
            format!("request-id={}", ctx.request_id),
            format!("idempotency-key={}", ctx.idempotency_key),
            format!("claims={claims}"),
        ];
        Ok(BookJobResponse {
            order_num,
            ordered_parts: vec![OrderedPart {
                part_order_num: "context".into(),
                parts: context,
            }],
        })
    }
}

followup_sdk::export_plugin!(Echo: book);
