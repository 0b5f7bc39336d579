//! Errors: [`Error`] is the library's one error enum; [`ApiError`] is what an HTTP caller sees.
//!
//! Every failure a client can observe maps to a stable `error_code` (the public contract listed
//! in `docs/http-api.md`). SQL text and driver messages never reach a response: they are logged
//! with the request id and replaced by a generic message.

use http::StatusCode;
use serde_json::Value;

/// Library-level failures, with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("policy {file}: {reason}")]
    Policy { file: String, reason: String },
    #[error("embedded PostgreSQL: {0}")]
    Embedded(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("plugin {plugin}: {reason}")]
    Plugin { plugin: String, reason: String },
    /// The database did not answer within the request's deadline (frozen, partitioned,
    /// overloaded): whatever was in flight is abandoned.
    #[error("database did not answer in time: {0}")]
    Deadline(&'static str),
    #[error("io: {context}: {source}")]
    Io { context: String, source: std::io::Error },
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Declares [`Code`], its wire strings and [`Code::ALL`] in one list, so the list the
/// OpenAPI document and its tests read cannot miss a code.
macro_rules! error_codes {
    ($($variant:ident = $text:literal,)*) => {
        /// The stable error codes of the HTTP contract.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            /// Every code, in declaration order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)*
                }
            }
        }
    };
}

error_codes! {
    Unauthenticated = "UNAUTHENTICATED",
    MissingTenantId = "MISSING_TENANT_ID",
    TenantMismatch = "TENANT_MISMATCH",
    UnauthorizedBusiness = "UNAUTHORIZED_BUSINESS",
    Forbidden = "FORBIDDEN",
    NotFound = "NOT_FOUND",
    MethodNotAllowed = "METHOD_NOT_ALLOWED",
    RateLimited = "RATE_LIMITED",
    PayloadTooLarge = "PAYLOAD_TOO_LARGE",
    InvalidJson = "INVALID_JSON",
    ValidationFailed = "VALIDATION_FAILED",
    Conflict = "CONFLICT",
    Unprocessable = "UNPROCESSABLE",
    Unavailable = "UNAVAILABLE",
    Internal = "INTERNAL",
    PluginFailed = "PLUGIN_FAILED",
    PluginTimeout = "PLUGIN_TIMEOUT",
    PluginResourceExhausted = "PLUGIN_RESOURCE_EXHAUSTED",
    PluginRejected = "PLUGIN_REJECTED",
    PluginGrantsMissing = "PLUGIN_GRANTS_MISSING",
    PluginUnknown = "PLUGIN_UNKNOWN",
    InvalidSignature = "INVALID_SIGNATURE",
    StaleWebhook = "STALE_WEBHOOK",
    MalformedRequest = "MALFORMED_REQUEST",
    UriTooLong = "URI_TOO_LONG",
    HeadersTooLarge = "HEADERS_TOO_LARGE",
    RequestTimeout = "REQUEST_TIMEOUT",
    TooManyConnections = "TOO_MANY_CONNECTIONS",
    ProviderUrlNotAllowed = "PROVIDER_URL_NOT_ALLOWED",
}

impl Code {
    pub fn status(self) -> StatusCode {
        match self {
            Code::Unauthenticated | Code::InvalidSignature | Code::StaleWebhook => StatusCode::UNAUTHORIZED,
            Code::MissingTenantId
            | Code::InvalidJson
            | Code::ValidationFailed
            | Code::MalformedRequest
            | Code::ProviderUrlNotAllowed => {
                StatusCode::BAD_REQUEST
            }
            Code::TenantMismatch | Code::UnauthorizedBusiness | Code::Forbidden => {
                StatusCode::FORBIDDEN
            }
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::RateLimited | Code::TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
            Code::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Code::UriTooLong => StatusCode::URI_TOO_LONG,
            Code::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::Conflict => StatusCode::CONFLICT,
            Code::Unprocessable | Code::PluginRejected | Code::PluginGrantsMissing | Code::PluginUnknown => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::PluginFailed | Code::PluginResourceExhausted => StatusCode::BAD_GATEWAY,
            Code::PluginTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// An error on its way to an HTTP client: a code, a human message, optional details and
/// extra response headers (e.g. `Retry-After`).
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    /// A more specific code than `code`'s own (e.g. a plugin's `IDEMPOTENCY_KEY_REUSED`);
    /// the status still comes from `code`.
    pub custom_code: Option<String>,
    pub message: String,
    pub details: Option<Value>,
    /// Top-level members of the error body beside the envelope's own (e.g. `missing` of
    /// `PLUGIN_GRANTS_MISSING`); never one of `error`, `error_code`, `request_id`, `details`.
    /// Boxed: errors travel in every `Result` of the request path, and are rarely this.
    pub fields: Option<Box<serde_json::Map<String, Value>>>,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError { code, custom_code: None, message: message.into(), details: None, fields: None, headers: Vec::new() }
    }
    pub fn with_code(mut self, code: String) -> Self {
        self.custom_code = Some(code);
        self
    }
    /// The `error_code` the client sees.
    pub fn code_str(&self) -> &str {
        self.custom_code.as_deref().unwrap_or(self.code.as_str())
    }
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
    pub fn with_field(mut self, name: &'static str, value: Value) -> Self {
        self.fields.get_or_insert_with(Default::default).insert(name.to_string(), value);
        self
    }
    pub fn not_found() -> Self {
        ApiError::new(Code::NotFound, "not found")
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(Code::Forbidden, message)
    }
    /// A single-field validation failure.
    pub fn invalid(field: &str, problem: &str) -> Self {
        ApiError::new(Code::ValidationFailed, "request failed validation")
            .with_details(serde_json::json!([{ "field": field, "problem": problem }]))
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::from(Error::Db(e))
    }
}

impl From<Error> for ApiError {
    /// Database trouble is "unavailable" (connectivity, pool exhaustion, timeouts), a value the
    /// database cannot store (the caller's: 400), or an internal fault; none leaks its text.
    /// Named constraint violations that are the caller's fault are mapped by the handler that
    /// knows the constraint, before reaching here.
    fn from(e: Error) -> Self {
        match &e {
            Error::Db(_) | Error::Deadline(_) if is_unavailable_error(&e) => {
                tracing::warn!(error = %loggable(&e), "database unavailable");
                ApiError::new(Code::Unavailable, "service temporarily unavailable")
                    .with_header("retry-after", "1")
            }
            Error::Db(db) if is_data_exception(db) => {
                tracing::warn!(error = %loggable(&e), "database refused a value");
                ApiError::new(Code::ValidationFailed, "a value in the request cannot be stored")
            }
            _ => {
                tracing::error!(error = %loggable(&e), "internal error");
                ApiError::new(Code::Internal, "internal error")
            }
        }
    }
}

impl ApiError {
    pub fn with_header(mut self, name: &'static str, value: impl AsRef<str>) -> Self {
        if let Ok(v) = http::HeaderValue::from_str(value.as_ref()) {
            self.headers.push((http::HeaderName::from_static(name), v));
        }
        self
    }
}

/// What may be logged of an error: PostgreSQL's messages quote the values involved (tenant
/// data: emails, phones), so a database error is logged by its SQLSTATE, constraint and table.
pub fn loggable(e: &Error) -> String {
    match e {
        Error::Db(sqlx::Error::Database(db)) => format!(
            "database error SQLSTATE {} (constraint {}, table {})",
            db.code().as_deref().unwrap_or("?"),
            db.constraint().unwrap_or("-"),
            db.table().unwrap_or("-"),
        ),
        other => other.to_string(),
    }
}

fn is_unavailable_error(e: &Error) -> bool {
    match e {
        Error::Db(db) => is_unavailable(db),
        Error::Deadline(_) => true,
        _ => false,
    }
}

/// Whether a database error means "cannot reach / cannot get a connection / gave up waiting".
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now,
            // 57014 query_canceled (statement_timeout), 08xxx connection exceptions,
            // 53300 too_many_connections, 25P03 idle_in_transaction_session_timeout,
            // 55P03 lock_not_available (lock_timeout: contention, worth a retry).
            matches!(db.code().as_deref(), Some(c) if c.starts_with("08") || c.starts_with("57P")
                || c == "57014" || c == "53300" || c == "25P03" || c == "55P03")
        }
        _ => false,
    }
}

/// Whether the database refused a value itself (SQLSTATE class 22, "data exception": text
/// containing U+0000, a number out of range, text that is not a valid `uuid` or timestamp).
/// Statements bind values as parameters, so the value is one the caller sent (the warning
/// logged with its SQLSTATE tells the rare gateway bug apart).
pub fn is_data_exception(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("22")))
}

/// The name of the violated constraint, if `e` is a constraint violation.
pub fn violated_constraint(e: &sqlx::Error) -> Option<&str> {
    match e {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::structured::tests::db_error;

    #[test]
    fn a_value_the_database_refuses_is_the_callers_400_without_its_text() {
        for code in ["22021", "22P05", "22P02", "22003", "22007", "22000"] {
            let e = ApiError::from(db_error(Some(code), None));
            assert_eq!((e.code, e.code.status().as_u16()), (Code::ValidationFailed, 400), "{code}");
            assert_eq!(e.message, "a value in the request cannot be stored");
            assert!(e.details.is_none());
        }
        // Everything else keeps its answer.
        assert_eq!(ApiError::from(db_error(Some("57P01"), None)).code, Code::Unavailable);
        assert_eq!(ApiError::from(db_error(Some("23505"), Some("x_key"))).code, Code::Internal);
        assert_eq!(ApiError::from(db_error(Some("42703"), None)).code, Code::Internal);
        assert_eq!(ApiError::from(db_error(None, None)).code, Code::Internal);
    }
}
