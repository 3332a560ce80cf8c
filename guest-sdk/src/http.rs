//! Outbound HTTP from a plugin: one blocking request/response over the standard
//! `wasi:http/outgoing-handler`.
//!
//! The operator grants it per plugin with the origins it may call (`[plugins.NAME.http]
//! allow = [...]`); a request to any other origin, over the grant's call count, slower than
//! its timeout or with a larger answer than it allows fails with an [`HttpError`] naming the
//! `wasi:http` error code. Built natively, every request fails with
//! [`HttpError::Unavailable`] (the rules around it stay testable with plain `cargo test`).

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// `http://` or `https://` URL.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

/// One response, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The URL is not an absolute `http(s)://` URL, or a header is invalid.
    BadRequest(String),
    /// The host refused the request: its origin is not on the plugin's allow-list, or the
    /// plugin made more requests than its grant allows.
    Denied(String),
    /// No answer within the grant's timeout.
    Timeout(String),
    /// The answer was larger than the grant allows.
    TooLarge(String),
    /// Anything else (connection refused, DNS, TLS, protocol): the `wasi:http` error code.
    Failed(String),
    /// Outbound HTTP exists only inside a component.
    Unavailable,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::BadRequest(m) => write!(f, "bad request: {m}"),
            HttpError::Denied(m) => write!(f, "refused by the host: {m}"),
            HttpError::Timeout(m) => write!(f, "timed out: {m}"),
            HttpError::TooLarge(m) => write!(f, "answer too large: {m}"),
            HttpError::Failed(m) => write!(f, "failed: {m}"),
            HttpError::Unavailable => write!(f, "outbound HTTP is only available in a component"),
        }
    }
}

impl Request {
    pub fn new(method: Method, url: impl Into<String>) -> Request {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// A JSON body (and its `Content-Type`).
    pub fn json(mut self, value: &serde_json::Value) -> Request {
        self.body = value.to_string().into_bytes();
        self.header("content-type", "application/json")
    }

    /// Sends the request and reads the whole response.
    pub fn send(self) -> Result<Response, HttpError> {
        imp::send(self)
    }
}

/// `scheme`, `authority` and `path?query` of an absolute URL.
pub fn split_url(url: &str) -> Result<(&str, &str, String), HttpError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| HttpError::BadRequest(format!("{url:?} is not an absolute URL")))?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(HttpError::BadRequest(format!(
            "{url:?}: the scheme must be http or https"
        )));
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(HttpError::BadRequest(format!("{url:?} has no host")));
    }
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Ok((scheme, authority, path))
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    pub fn send(_: super::Request) -> Result<super::Response, super::HttpError> {
        Err(super::HttpError::Unavailable)
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::{HttpError, Method, Request, Response, split_url};
    use wasi::http::outgoing_handler::handle;
    use wasi::http::types::{
        ErrorCode, Fields, IncomingBody, Method as WasiMethod, OutgoingBody, OutgoingRequest,
        Scheme,
    };
    use wasi::io::streams::StreamError;

    fn error(code: ErrorCode) -> HttpError {
        let text = format!("{code:?}");
        match code {
            ErrorCode::HttpRequestDenied => {
                HttpError::Denied("the origin is not on the plugin's allow-list".into())
            }
            ErrorCode::InternalError(Some(m)) if m.starts_with("more than") => HttpError::Denied(m),
            ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout => HttpError::Timeout(text),
            ErrorCode::HttpResponseBodySize(_) => HttpError::TooLarge(text),
            _ => HttpError::Failed(text),
        }
    }

    pub fn send(request: Request) -> Result<Response, HttpError> {
        let (scheme, authority, path) = split_url(&request.url)?;
        let fields: Vec<(String, Vec<u8>)> = request
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
            .collect();
        let headers = Fields::from_list(&fields)
            .map_err(|e| HttpError::BadRequest(format!("headers: {e:?}")))?;
        let outgoing = OutgoingRequest::new(headers);
        let method = match request.method {
            Method::Get => WasiMethod::Get,
            Method::Post => WasiMethod::Post,
            Method::Put => WasiMethod::Put,
            Method::Patch => WasiMethod::Patch,
            Method::Delete => WasiMethod::Delete,
        };
        let scheme = if scheme.eq_ignore_ascii_case("https") {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let bad = |what: &str| HttpError::BadRequest(format!("{}: invalid {what}", request.url));
        outgoing.set_method(&method).map_err(|()| bad("method"))?;
        outgoing
            .set_scheme(Some(&scheme))
            .map_err(|()| bad("scheme"))?;
        outgoing
            .set_authority(Some(authority))
            .map_err(|()| bad("authority"))?;
        outgoing
            .set_path_with_query(Some(&path))
            .map_err(|()| bad("path"))?;
        let body = outgoing.body().map_err(|()| bad("body"))?;
        // Handed over first, so that the host drains the body while it is written.
        let pending = handle(outgoing, None).map_err(error)?;
        {
            let stream = body.write().map_err(|()| bad("body"))?;
            for chunk in request.body.chunks(4096) {
                if let Err(e) = stream.blocking_write_and_flush(chunk) {
                    // The host closes the body of a request it has already refused (or
                    // failed to send): its answer says why, the closed stream does not.
                    pending.subscribe().block();
                    return Err(match pending.get() {
                        Some(Ok(Err(code))) => error(code),
                        _ => HttpError::Failed(format!("writing the body: {e:?}")),
                    });
                }
            }
        }
        OutgoingBody::finish(body, None).map_err(error)?;

        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(error(code)),
            _ => return Err(HttpError::Failed("the response was lost".into())),
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let incoming = response
            .consume()
            .map_err(|()| HttpError::Failed("no body".into()))?;
        let mut body = Vec::new();
        {
            let stream = incoming
                .stream()
                .map_err(|()| HttpError::Failed("no body".into()))?;
            loop {
                match stream.blocking_read(64 << 10) {
                    Ok(chunk) => body.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        let text = e.to_debug_string();
                        return Err(if text.contains("size") {
                            HttpError::TooLarge(text)
                        } else if text.contains("imeout") {
                            HttpError::Timeout(text)
                        } else {
                            HttpError::Failed(text)
                        });
                    }
                }
            }
        }
        let _trailers = IncomingBody::finish(incoming);
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:9000/bookings/WO-1?x=1").unwrap(),
            ("http", "127.0.0.1:9000", "/bookings/WO-1?x=1".to_string())
        );
        assert_eq!(
            split_url("https://h").unwrap(),
            ("https", "h", "/".to_string())
        );
        assert_eq!(split_url("http://h?q=1").unwrap().2, "/?q=1");
        assert!(split_url("ftp://h/").is_err());
        assert!(split_url("/relative").is_err());
        assert!(split_url("http:///x").is_err());
    }

    #[test]
    fn natively_requests_are_unavailable() {
        let r = Request::new(Method::Get, "http://h/").send();
        assert_eq!(r, Err(HttpError::Unavailable));
    }
}
