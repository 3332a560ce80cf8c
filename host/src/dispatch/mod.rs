//! One operation on a plugin, the same for a route's request, an admission sample and
//! `followup plugin run`: decode the parsed request into the contract's records, call the
//! plugin (in its sandbox, or — in a build with the `native-baseline` feature, for the
//! benchmarks — its rules compiled in: `native`), check the answer against
//! the contract and the plugin's limits, and encode it.

#[cfg(feature = "native-baseline")]
pub mod native;

use crate::contract::PluginIdent;
use crate::contract::bindings::authentication::{AuthError, Credentials, Identity};
use crate::contract::types::{
    AppointmentSearchResponse, BookJob, BookJobResponse, BookingError, RequestContext,
};
use crate::contract::{self, RouteKind};
use crate::error::{ApiError, ErrorKind};
use serde_json::Value;
use std::sync::Arc;

/// Runs `plugin` on a parsed request (a route's or an admission sample's): decodes it into
/// the contract's types, calls the plugin in a fresh sandboxed instance, checks its answer
/// against the contract and its size limit, and encodes it.
pub async fn answer(
    runtime: &crate::runtime::PluginRuntime,
    plugin: &crate::plugin::LoadedPlugin,
    kind: RouteKind,
    ctx: &RequestContext,
    json: &Value,
    services: crate::runtime::Services,
) -> Result<(Vec<u8>, crate::runtime::Services), ApiError> {
    let limit = plugin.limits.max_response_bytes;
    let refused = |e: BookingError| {
        ApiError::from_booking(e)
            .within(limit)
            .for_plugin(&plugin.ident)
    };
    // Encoding stops at the first byte over the limit: an answer too large is never
    // held whole.
    let encoded = |answer: Result<Vec<u8>, contract::codec::WriteError>| {
        answer.map_err(|e| {
            match e {
                contract::codec::WriteError::TooLarge => ApiError::new(
                    ErrorKind::PluginResponseTooLarge,
                    format!(
                        "plugin {} answered over its max_response_bytes of {limit}",
                        plugin.ident
                    ),
                ),
                contract::codec::WriteError::Invalid(e) => ApiError::new(
                    ErrorKind::PluginBadResult,
                    format!("plugin {} returned an invalid answer: {e}", plugin.ident),
                ),
            }
            .for_plugin(&plugin.ident)
        })
    };
    // The native baseline (benchmark builds only) answers with the rules compiled in.
    #[cfg(feature = "native-baseline")]
    if let Some(rules) = &plugin.native {
        let (answer, used) = native::answer(rules, plugin, kind, ctx, json, services)?;
        return Ok((encoded(answer)?, used));
    }
    let (answer, used) = match kind {
        // Credentials are no JSON tree: they go through `authenticate`.
        RouteKind::Authentication => {
            return Err(ApiError::new(
                ErrorKind::Internal,
                "an authentication route is answered through dispatch::authenticate",
            ));
        }
        RouteKind::BookJob => {
            let job = decode(json)?;
            let (answer, used) = runtime.book(plugin, ctx, &job, services).await?;
            let response = answer.map_err(refused)?;
            (contract::to_vec::<BookJobResponse>(&response, limit), used)
        }
        RouteKind::AppointmentSearch => {
            let query = decode(json)?;
            let (answer, used) = runtime.search(plugin, ctx, &query, services).await?;
            let response = answer.map_err(refused)?;
            (
                contract::to_vec::<AppointmentSearchResponse>(&response, limit),
                used,
            )
        }
    };
    Ok((encoded(answer)?, used))
}

/// The request's JSON tree as the contract's records, every problem with its JSON path.
fn decode(json: &Value) -> Result<BookJob, ApiError> {
    let span = otel_span!(
        "followup.decode",
        followup.problems = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    let _in = span.enter();
    contract::decode::<BookJob>(json).map_err(|problems| {
        span.record("followup.problems", problems.len());
        let err = ApiError::invalid(problems);
        span.record("error.type", err.kind.code());
        err
    })
}

/// Runs `plugin`'s `authenticate` on an authentication route's credentials: the identity
/// it vouches for, or the refusal as the error to answer (the host mints the token).
pub async fn authenticate(
    runtime: &crate::runtime::PluginRuntime,
    plugin: &crate::plugin::LoadedPlugin,
    ctx: &RequestContext,
    credentials: &Credentials,
    services: crate::runtime::Services,
) -> Result<Identity, ApiError> {
    let (answer, _) = runtime
        .authenticate(plugin, ctx, credentials, services)
        .await?;
    answer.map_err(|e| refused_logon(e, &plugin.ident, &ctx.request_id, &credentials.password))
}

/// What a plugin's refusal becomes. An invalid logon says nothing of why (the caller must
/// not learn which usernames exist); the plugin's reason goes to the operator's log. A
/// plugin that quotes the password in its message has it blotted out.
fn refused_logon(
    err: AuthError,
    plugin: &Arc<PluginIdent>,
    request_id: &str,
    password: &str,
) -> ApiError {
    let cut = |m: &str| {
        crate::text::cut(
            &m.replace(password, "[password]"),
            crate::error::REFUSAL.detail,
        )
    };
    match err {
        AuthError::InvalidLogon(reason) => {
            tracing::info!(plugin = %plugin, request_id, reason = cut(&reason), "logon refused");
            ApiError::new(
                ErrorKind::InvalidLogon,
                "the username or password is not valid",
            )
        }
        AuthError::Unavailable(m) => ApiError::new(ErrorKind::UpstreamFailure, cut(&m)),
        AuthError::Internal(m) => ApiError::new(ErrorKind::Internal, cut(&m)),
    }
    .for_plugin(plugin)
}
