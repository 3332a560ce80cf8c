//! Test guest: calls a host over `wasi:http/outgoing-handler`, which no plugin has been
//! granted. The host must refuse it before it ever runs.

use followup_sdk::*;

pub struct HttpCaller;

impl BookingPlugin for HttpCaller {
    fn book(_ctx: RequestContext, _job: BookJob) -> Result<BookJobResponse, BookingError> {
        #[cfg(target_arch = "wasm32")]
        {
            use wasi::http::outgoing_handler::{OutgoingRequest, handle};
            use wasi::http::types::{Fields, Scheme};
            let request = OutgoingRequest::new(Fields::new());
            let _ = request.set_scheme(Some(&Scheme::Http));
            let _ = request.set_authority(Some("forbidden.example:80"));
            match handle(request, None) {
                Ok(_) => Err(BookingError::internal("the request left the sandbox")),
                Err(e) => Err(BookingError::upstream(format!("denied: {e:?}"))),
            }
        }
        #[cfg(not(target_arch = "wasm32"))]
        Err(BookingError::internal("only meaningful as a component"))
    }
}

followup_sdk::export_plugin!(HttpCaller: book);
