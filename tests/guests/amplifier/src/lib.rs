//! Test guest: makes the host, not itself, hold or write as much as it can — a huge answer
//! in a small memory, huge refusals, forged log lines, empty log entries, header maps,
//! body buffers, repeated key-value listings, long refused URLs and huge invalid search
//! answers. One behaviour per plugin, chosen by the operator's `behaviour` config value.
//! Each must cost the host a bounded amount, charged to the call.

use followup_sdk::*;

pub struct Amplifier;

/// Bytes of each header map `header-maps` builds (under wasmtime's default field limit of
/// 128 KiB, which alone would let 4,000 of them through).
#[cfg(target_arch = "wasm32")]
const HEADER_MAP_BYTES: usize = 100_000;

fn many_parts() -> Result<BookJobResponse, BookingError> {
    let ordered_parts = (0..1_200_000)
        .map(|_| OrderedPart {
            part_order_num: String::new(),
            parts: Vec::new(),
        })
        .collect();
    Ok(BookJobResponse {
        order_num: "FU-MANY".into(),
        ordered_parts,
    })
}

fn many_params() -> Result<BookJobResponse, BookingError> {
    let count = config::get_or("count", 10_000usize);
    let params = (0..count)
        .map(|i| InvalidParam {
            name: format!("Field{i}"),
            reason: "is not acceptable to this rule".into(),
            path: format!("$.RequiredParts[{i}].Qty"),
            value: "x".repeat(64),
        })
        .collect();
    Err(BookingError::InvalidRequest(InvalidRequestError {
        message: "too many problems".into(),
        params,
    }))
}

fn forge_log() -> Result<BookJobResponse, BookingError> {
    log::info("ok\n1999-01-01T00:00:00.000000Z  INFO FORGED-LOG forged through the log service");
    log::warn("tab\tand\rreturn\u{1b}[31m and an escape");
    Err(BookingError::internal(
        "no\n1999-01-01T00:00:00.000000Z  INFO FORGED-REFUSAL forged through a refusal",
    ))
}

fn empty_logs() -> Result<BookJobResponse, BookingError> {
    loop {
        log::info("");
    }
}

#[cfg(target_arch = "wasm32")]
fn header_maps() -> Result<BookJobResponse, BookingError> {
    use wasi::http::types::Fields;
    let value = vec![b'v'; 1_000];
    let mut kept = Vec::new();
    for i in 0..4_000 {
        let fields = Fields::new();
        for h in 0..HEADER_MAP_BYTES / 1_000 {
            if fields.append(&format!("x-h{h}"), &value).is_err() {
                break;
            }
        }
        kept.push(fields);
        std::hint::black_box(i);
    }
    Ok(BookJobResponse {
        order_num: format!("FU-FIELDS-{}", kept.len()),
        ordered_parts: vec![],
    })
}

/// 4,000 header maps each under the host's per-map limit, all kept alive.
#[cfg(target_arch = "wasm32")]
fn many_fields() -> Result<BookJobResponse, BookingError> {
    use wasi::http::types::Fields;
    let value = vec![b'v'; 1_000];
    let mut kept = Vec::new();
    for _ in 0..4_000 {
        let fields = Fields::new();
        for h in 0..10 {
            let _ = fields.append(&format!("x-h{h}"), &value);
        }
        kept.push(fields);
    }
    Ok(BookJobResponse {
        order_num: format!("FU-FIELDS-{}", kept.len()),
        ordered_parts: vec![],
    })
}

#[cfg(not(target_arch = "wasm32"))]
fn many_fields() -> Result<BookJobResponse, BookingError> {
    header_maps()
}

#[cfg(target_arch = "wasm32")]
fn body_buffers() -> Result<BookJobResponse, BookingError> {
    use wasi::http::types::{Fields, OutgoingRequest};
    let chunk = vec![b'b'; 1 << 20];
    let mut kept = Vec::new();
    let mut buffered = 0usize;
    // 25 bodies: 50 MiB of buffers at wasi:http's default of two 1 MiB chunks each.
    for _ in 0..25 {
        let request = OutgoingRequest::new(Fields::new());
        let Ok(body) = request.body() else { break };
        let Ok(stream) = body.write() else { break };
        // Writes what the host lets it, without ever sending the request.
        if let Ok(n) = stream.check_write() {
            let n = (n as usize).min(chunk.len());
            if n > 0 && stream.write(&chunk[..n]).is_ok() {
                buffered += n;
            }
        }
        // A stream is its body's child: it must go first when they are dropped.
        kept.push((stream, body, request));
    }
    Ok(BookJobResponse {
        order_num: format!("FU-BODIES-{}-{buffered}", kept.len()),
        ordered_parts: vec![],
    })
}

#[cfg(target_arch = "wasm32")]
fn refused_urls() -> Result<BookJobResponse, BookingError> {
    use wasi::http::outgoing_handler::handle;
    use wasi::http::types::{Fields, OutgoingRequest, Scheme};
    let path = format!("/{}", "u".repeat(60_000));
    let mut refused = 0;
    for _ in 0..8 {
        let request = OutgoingRequest::new(Fields::new());
        let _ = request.set_scheme(Some(&Scheme::Http));
        let _ = request.set_authority(Some("not-allowed.example:80"));
        let _ = request.set_path_with_query(Some(&path));
        // The host refuses when the request is sent, which the guest sees in the answer.
        let refused_now = match handle(request, None) {
            Err(_) => true,
            Ok(answer) => {
                answer.subscribe().block();
                !matches!(answer.get(), Some(Ok(Ok(_))))
            }
        };
        refused += u32::from(refused_now);
    }
    Err(BookingError::upstream(format!("{refused} refused")))
}

#[cfg(not(target_arch = "wasm32"))]
fn header_maps() -> Result<BookJobResponse, BookingError> {
    Err(BookingError::internal("only meaningful as a component"))
}

#[cfg(not(target_arch = "wasm32"))]
fn body_buffers() -> Result<BookJobResponse, BookingError> {
    header_maps()
}

#[cfg(not(target_arch = "wasm32"))]
fn refused_urls() -> Result<BookJobResponse, BookingError> {
    header_maps()
}

/// Seeds 1,000 keys of about 500 bytes (WorkOrderID `SEED`), else lists them over and
/// over until the host says no more.
fn kv_lists(ctx: &RequestContext) -> Result<BookJobResponse, BookingError> {
    if ctx.work_order_id.as_deref() == Some("SEED") {
        for i in 0..1_000 {
            let key = format!("{i:04}-{}", "k".repeat(495));
            kv::set(&key, b"v").map_err(|e| BookingError::internal(format!("{e:?}")))?;
        }
        return Ok(BookJobResponse {
            order_num: "FU-SEEDED".into(),
            ordered_parts: vec![],
        });
    }
    let mut listings = 0u64;
    let mut limit = 1_000;
    loop {
        match kv::list_keys("", limit) {
            Ok(keys) => std::hint::black_box(keys.len()),
            Err(e) => {
                return Err(BookingError::internal(format!(
                    "stopped after {listings} listings: {e:?}"
                )));
            }
        };
        listings += 1;
        // Each limit is a listing of its own; the same one again would be answered from
        // what the host already holds.
        limit = if limit == 1 { 1_000 } else { limit - 1 };
    }
}

fn slot(start: String, extensions: Option<String>) -> TimeConstraint {
    TimeConstraint {
        id: Some("S1".into()),
        desc: None,
        type_: None,
        period: Some(Period {
            start: Some(start),
            end: Some("2024-06-18T17:00:00.000Z".into()),
            extensions: None,
        }),
        delete: None,
        extensions,
    }
}

impl BookingPlugin for Amplifier {
    fn book(ctx: RequestContext, _job: BookJob) -> Result<BookJobResponse, BookingError> {
        match config::get("behaviour").unwrap_or_default().as_str() {
            "many-parts" => many_parts(),
            "long-refusal" => Err(BookingError::internal("R".repeat(2_000_000))),
            "many-params" => many_params(),
            "forge-log" => forge_log(),
            "empty-logs" => empty_logs(),
            "header-maps" => header_maps(),
            "many-fields" => many_fields(),
            "body-buffers" => body_buffers(),
            "kv-lists" => kv_lists(&ctx),
            "refused-urls" => refused_urls(),
            other => Err(BookingError::internal(format!(
                "unknown behaviour {other:?}"
            ))),
        }
    }
}

impl SearchPlugin for Amplifier {
    fn search(
        _ctx: RequestContext,
        _query: AppointmentSearch,
    ) -> Result<AppointmentSearchResponse, BookingError> {
        let huge = "9".repeat(2_000_000);
        let time_constraints = match config::get("behaviour").unwrap_or_default().as_str() {
            "huge-extensions" => vec![slot("2024-06-18T13:00:00.000Z".into(), Some(huge))],
            "huge-start" => vec![slot(huge, None)],
            _ => vec![],
        };
        Ok(AppointmentSearchResponse {
            status_msg: Some("searched".into()),
            time_constraints,
        })
    }
}

followup_sdk::export_plugin!(Amplifier: book, search);
