//! The one error type every backend returns.
//!
//! Callers match on [`ErrorKind`]; the message names the stream, option or limit involved, so a
//! log line is enough to act on. Backends classify retryability where they parse the failure,
//! because only they know whether a broker error is transient.

use std::fmt;

/// What went wrong, in terms a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A URL, option or argument is malformed, unknown or of the wrong type.
    Config,
    /// The stream, group, partition or position does not exist.
    NotFound,
    /// The stream (or other entity) already exists.
    AlreadyExists,
    /// An event or batch exceeds a declared size limit.
    TooLarge,
    /// The producer, consumer or backend was closed.
    Closed,
    /// The operation did not finish within its deadline.
    Timeout,
    /// The server or resource cannot be reached or is busy; trying again may work.
    Unavailable,
    /// Credentials were missing, invalid or insufficient.
    Unauthorized,
    /// The backend cannot do this (see its [`crate::Capabilities`]).
    Unsupported,
    /// Stored data failed an integrity check (checksum, framing, format version).
    Corrupt,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// A short lowercase name for logs, metrics labels and CLI output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::TooLarge => "too large",
            ErrorKind::Closed => "closed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Other => "other",
        }
    }

    /// Whether errors of this kind are worth retrying when the backend did not say otherwise.
    fn default_retryable(self) -> bool {
        matches!(self, ErrorKind::Timeout | ErrorKind::Unavailable)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from tributary or one of its backends.
///
/// ```
/// use tributary::{Error, ErrorKind};
/// let err = Error::not_found("stream `orders` does not exist").with_backend("memory");
/// assert_eq!(err.kind(), ErrorKind::NotFound);
/// assert!(!err.is_retryable());
/// assert_eq!(err.to_string(), "memory: not found: stream `orders` does not exist");
/// ```
pub struct Error {
    kind: ErrorKind,
    retryable: bool,
    backend: Option<&'static str>,
    operation: Option<&'static str>,
    stream: Option<String>,
    message: String,
    source: Option<Source>,
}

/// `Result` with tributary's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind`; retryability defaults from the kind (timeouts and unavailability).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            retryable: kind.default_retryable(),
            backend: None,
            operation: None,
            stream: None,
            message: message.into(),
            source: None,
        }
    }

    /// A configuration error (malformed URL, unknown option, wrong value type).
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }
    /// A missing stream, group, partition or position.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    /// An entity that already exists.
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, message)
    }
    /// A size limit was exceeded.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::TooLarge, message)
    }
    /// Use after close.
    pub fn closed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Closed, message)
    }
    /// A deadline passed.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }
    /// The server or resource is unreachable or busy.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    /// Credentials were refused.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, message)
    }
    /// The backend cannot do this.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
    /// Stored data failed an integrity check.
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, message)
    }
    /// Anything else.
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Other, message)
    }

    /// Names the backend the error came from (`"kafka"`, `"file"`…).
    pub fn with_backend(mut self, backend: &'static str) -> Self {
        self.backend = Some(backend);
        self
    }
    /// Records what was being done (`"send"`, `"receive"`, `"create stream"`…) and on which
    /// stream, where the error does not say so already. Backends do not call this themselves:
    /// [`crate::backend::stamped`] does it for every call that goes through the traits.
    pub fn with_operation(mut self, operation: &'static str, stream: Option<&str>) -> Self {
        self.operation.get_or_insert(operation);
        if self.stream.is_none() {
            self.stream = stream.map(str::to_owned);
        }
        self
    }
    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
    /// Overrides the retryability derived from the kind.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }
    /// Prefixes the message with context, keeping kind and source (`"opening stream `x`: …"`).
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// Whether the same operation may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
    /// The backend that produced the error, if known.
    pub fn backend(&self) -> Option<&'static str> {
        self.backend
    }
    /// The message, without kind or backend prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// The operation that failed, where known (`"send"`, `"receive"`…).
    pub fn operation(&self) -> Option<&'static str> {
        self.operation
    }
    /// The stream the failed operation was about, where known.
    pub fn stream(&self) -> Option<&str> {
        self.stream.as_deref()
    }

    /// Wraps an I/O error, classifying the common kinds.
    pub fn io(context: impl fmt::Display, err: std::io::Error) -> Self {
        use std::io::ErrorKind as Io;
        let kind = match err.kind() {
            Io::NotFound => ErrorKind::NotFound,
            Io::AlreadyExists => ErrorKind::AlreadyExists,
            Io::PermissionDenied => ErrorKind::Unauthorized,
            Io::TimedOut => ErrorKind::Timeout,
            Io::ConnectionRefused
            | Io::ConnectionReset
            | Io::ConnectionAborted
            | Io::WouldBlock => ErrorKind::Unavailable,
            Io::InvalidData | Io::UnexpectedEof => ErrorKind::Corrupt,
            _ => ErrorKind::Other,
        };
        Error::new(kind, format!("{context}: {err}")).with_source(err)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(backend) = self.backend {
            write!(f, "{backend}: ")?;
        }
        write!(f, "{}: {}", self.kind, self.message)?;
        // The operation and stream are added only when the message does not already name the
        // stream, so most messages read as written.
        if let Some(operation) = self.operation {
            match &self.stream {
                Some(stream) if !self.message.contains(stream.as_str()) => {
                    write!(f, " ({operation} `{stream}`)")?
                }
                Some(_) => {}
                None => write!(f, " ({operation})")?,
            }
        }
        Ok(())
    }
}

/// Readable as `Display` plus the chain of causes, like `anyhow`, because `fn main() ->
/// tributary::Result<()>` prints an error with `Debug`. `{:#?}` gives the fields.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            let mut d = f.debug_struct("Error");
            d.field("kind", &self.kind)
                .field("retryable", &self.retryable)
                .field("backend", &self.backend)
                .field("operation", &self.operation)
                .field("stream", &self.stream)
                .field("message", &self.message);
            if let Some(source) = &self.source {
                d.field("source", source);
            }
            return d.finish();
        }
        write!(f, "{self}")?;
        let mut cause = std::error::Error::source(self);
        let mut first = true;
        while let Some(c) = cause {
            let text = c.to_string();
            // I/O sources are already quoted in the message by `Error::io`.
            if !self.message.ends_with(&text) {
                if first {
                    f.write_str("\n\nCaused by:")?;
                    first = false;
                }
                write!(f, "\n    {text}")?;
            }
            cause = c.source();
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryability_follows_kind_unless_overridden() {
        assert!(Error::timeout("t").is_retryable());
        assert!(Error::unavailable("u").is_retryable());
        assert!(!Error::config("c").is_retryable());
        assert!(!Error::unavailable("u").with_retryable(false).is_retryable());
    }

    #[test]
    fn debug_reads_like_display_with_causes() {
        let e = Error::unavailable("broker down")
            .with_backend("kafka")
            .with_source(std::io::Error::other("connection refused"));
        assert_eq!(
            format!("{e:?}"),
            "kafka: unavailable: broker down\n\nCaused by:\n    connection refused"
        );
        assert!(format!("{e:#?}").contains("retryable: true"));
    }

    #[test]
    fn operation_and_stream_are_shown_only_when_the_message_lacks_them() {
        let e = Error::timeout("no answer in 5s").with_operation("send", Some("orders"));
        assert_eq!(e.to_string(), "timeout: no answer in 5s (send `orders`)");
        let e = Error::not_found("stream `orders` does not exist")
            .with_operation("send", Some("orders"));
        assert_eq!(e.to_string(), "not found: stream `orders` does not exist");
        assert_eq!(e.operation(), Some("send"));
    }

    #[test]
    fn io_errors_are_classified() {
        let e = Error::io(
            "reading x",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.to_string().starts_with("not found: reading x"));
    }
}
