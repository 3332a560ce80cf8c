//! A plugin's rules compiled into the host instead of run as a component: the native
//! baseline the benchmarks measure the sandbox against. Only an embedding program registers
//! them ([`crate::App::with_native`]); [`crate::dispatch::native`] calls them.

use followup_sdk as sdk;

pub type BookFn =
    fn(sdk::RequestContext, sdk::BookJob) -> Result<sdk::BookJobResponse, sdk::BookingError>;
pub type SearchFn = fn(
    sdk::RequestContext,
    sdk::AppointmentSearch,
) -> Result<sdk::AppointmentSearchResponse, sdk::BookingError>;

/// A plugin's entry points, compiled into the host.
#[derive(Debug, Clone, Copy, Default)]
pub struct NativeRules {
    pub book: Option<BookFn>,
    pub search: Option<SearchFn>,
}

impl NativeRules {
    /// The rules of a plugin type that books.
    pub fn booking<P: sdk::BookingPlugin>() -> Self {
        NativeRules {
            book: Some(P::book),
            search: None,
        }
    }

    /// These rules, answering searches with `P` too.
    pub fn with_search<P: sdk::SearchPlugin>(self) -> Self {
        NativeRules {
            search: Some(P::search),
            ..self
        }
    }
}
