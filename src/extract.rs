//! Request extractors that answer in problem+json: a malformed body is a 400, a body
//! that parses but breaks a type or shape rule is a 422 naming the field.

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::limits::JSON_BODY_BYTES_MAX;
use crate::problem::ApiError;

/// A JSON body of at most `JSON_BODY_BYTES_MAX` bytes.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = is_json(req);
        let payload = payload.take();
        Box::pin(async move {
            if !json {
                return Err(not_json());
            }
            let body = read_limited(payload, JSON_BODY_BYTES_MAX, "malformed_body").await?;
            parse_json(&body).map(Json)
        })
    }
}

/// Whether the request says its body is JSON (`application/json` or `…+json`).
fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|t| t == "application/json" || t.ends_with("+json"))
}

fn not_json() -> ApiError {
    ApiError::UnsupportedMedia {
        detail: "send the body as application/json".into(),
    }
}

/// Reads a body (or a multipart field) of at most `max` bytes: 413 beyond it, 400 with
/// `malformed` when the stream breaks. Every body reader goes through here.
pub async fn read_limited<S, E>(
    stream: S,
    max: usize,
    malformed: &'static str,
) -> Result<bytes::Bytes, ApiError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>>,
    E: std::fmt::Display,
{
    let mut stream = std::pin::pin!(stream);
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(malformed, e.to_string()))?;
        if body.len() + chunk.len() > max {
            return Err(ApiError::TooLarge {
                detail: format!("bodies here are limited to {max} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses a JSON document, telling malformed JSON (400) from a shape error (422).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => shape_error(&path, &inner.to_string()),
            _ => ApiError::bad_request(
                "malformed_json",
                format!("the body is not valid JSON: {inner}"),
            ),
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request("malformed_json", format!("trailing data: {e}")))?;
    Ok(value)
}

/// Query parameters, parsed with the same answers as bodies.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Query<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(req.query_string()));
        std::future::ready(
            serde_path_to_error::deserialize(de)
                .map(Query)
                .map_err(|e| {
                    let path = e.path().to_string();
                    shape_error(&path, &e.into_inner().to_string())
                }),
        )
    }
}

fn form_urlencoded_parse(q: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(q.as_bytes())
}

/// Turns a serde data error into a 422 naming the field and the rule.
fn shape_error(path: &str, message: &str) -> ApiError {
    let between_ticks = |m: &str| m.split('`').nth(1).map(str::to_string);
    let nested = |name: String| {
        if path == "." || path.is_empty() {
            name
        } else if path == name || path.ends_with(&format!(".{name}")) {
            // serde_path_to_error already tracked into the unknown key itself.
            path.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    let (field, rule) = if message.starts_with("missing field") {
        (
            between_ticks(message)
                .map(nested)
                .unwrap_or_else(|| path.into()),
            "required",
        )
    } else if message.starts_with("unknown field") {
        (
            between_ticks(message)
                .map(nested)
                .unwrap_or_else(|| path.into()),
            "unknown_field",
        )
    } else if message.starts_with("unknown variant") {
        (path.to_string(), "one_of")
    } else {
        (path.to_string(), "type")
    };
    let field = if field.is_empty() || field == "." {
        "body".to_string()
    } else {
        field
    };
    // serde's messages end with a position ("at line 1 column 9"): not useful to people.
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_string();
    ApiError::invalid_field(&field, rule, message)
}

/// An id from the path; anything that is not an id of ours is simply not found.
pub fn path_id<T: FromStr>(raw: &str) -> Result<T, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound)
}

/// A JSON body plus the fingerprint of the request (method, path, body) that an
/// idempotency key is bound to.
pub struct HashedJson<T>(pub T, pub [u8; 32]);

impl<T: DeserializeOwned + 'static> FromRequest for HashedJson<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let (method, path) = (req.method().to_string(), req.path().to_string());
        let has_type = req.headers().get(header::CONTENT_TYPE).is_some();
        let json = is_json(req);
        let payload = payload.take();
        Box::pin(async move {
            let body = read_limited(payload, JSON_BODY_BYTES_MAX, "malformed_body").await?;
            // A bodiless POST without a content type (e.g. a full refund) reads as `{}`.
            let parsed = match (body.is_empty() && !has_type, json) {
                (true, _) => parse_json(b"{}")?,
                (false, true) => parse_json(&body)?,
                (false, false) => return Err(not_json()),
            };
            Ok(HashedJson(
                parsed,
                crate::idempotency::fingerprint(&method, &path, &body),
            ))
        })
    }
}

/// The `Idempotency-Key` a money request must carry.
pub fn required_idempotency_key(req: &HttpRequest) -> Result<String, ApiError> {
    crate::idempotency::key_of(req)?.ok_or_else(|| {
        ApiError::bad_request(
            "idempotency_key_required",
            "send an Idempotency-Key header (1 to 64 characters)",
        )
    })
}

/// A file sent either in a multipart field named `file`, or as the whole body with one of
/// the content types `raw` (a prefix each; `"*"` takes any), at most `max` bytes (413).
/// `what` and `raw_names` say in a refusal what to send.
pub async fn read_file(
    req: &HttpRequest,
    payload: actix_web::web::Payload,
    max: usize,
    raw: &[&str],
    what: &str,
    raw_names: &str,
) -> Result<Vec<u8>, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = actix_multipart::Multipart::new(req.headers(), payload);
        while let Some(field) = multipart.next().await {
            let field =
                field.map_err(|e| ApiError::bad_request("malformed_multipart", e.to_string()))?;
            if field.name() != Some("file") {
                continue;
            }
            let bytes = read_limited(field, max, "malformed_multipart").await?;
            return Ok(bytes.to_vec());
        }
        Err(ApiError::invalid_field(
            "file",
            "required",
            format!("send {what} in a multipart field named file"),
        ))
    } else if raw.iter().any(|r| *r == "*" || content_type.starts_with(r)) {
        Ok(read_limited(payload, max, "malformed_body").await?.to_vec())
    } else {
        Err(ApiError::UnsupportedMedia {
            detail: format!("send multipart/form-data with a file field, or {what} as {raw_names}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::ResponseError;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        amount: i64,
    }

    fn field_and_rule(e: ApiError) -> (u16, String, String) {
        let p = e.problem();
        let v = p.errors.first().cloned();
        (
            e.status_code().as_u16(),
            v.as_ref().map(|v| v.field.clone()).unwrap_or_default(),
            v.map(|v| v.rule).unwrap_or_default(),
        )
    }

    #[test]
    fn malformed_json_is_400_and_shape_errors_are_422_naming_the_field() {
        assert_eq!(
            parse_json::<Body>(b"{\"name\":")
                .unwrap_err()
                .status_code()
                .as_u16(),
            400
        );
        assert_eq!(
            parse_json::<Body>(b"{\"name\":\"a\"} x")
                .unwrap_err()
                .status_code()
                .as_u16(),
            400
        );
        assert_eq!(
            field_and_rule(parse_json::<Body>(b"{}").unwrap_err()),
            (422, "name".into(), "required".into())
        );
        assert_eq!(
            field_and_rule(
                parse_json::<Body>(b"{\"name\":\"a\",\"inner\":{\"amount\":\"x\"}}").unwrap_err()
            ),
            (422, "inner.amount".into(), "type".into())
        );
        assert_eq!(
            field_and_rule(parse_json::<Body>(b"{\"name\":\"a\",\"nmae\":1}").unwrap_err()),
            (422, "nmae".into(), "unknown_field".into())
        );
    }
}
