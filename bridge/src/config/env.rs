//! `${NAME}` references to environment variables, and keeping what they held out of every
//! message: whatever came from the environment counts as secret (that is what the references
//! are for), so messages show `${NAME}` instead of the value.

use std::io::Write;
use std::sync::Arc;

use tributary::Error;

/// Values the configuration took from the environment, with the variables they came from.
#[derive(Clone, Default)]
pub struct Secrets {
    /// (value as it may appear in text, `${NAME}`), longest value first.
    replacements: Vec<(String, String)>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("values", &self.replacements.len())
            .finish()
    }
}

impl Secrets {
    /// Shorter values are left in messages: replacing every `1` or `on` would make them
    /// unreadable, and no credential is that short.
    pub const MIN_LEN: usize = 4;

    fn add(&mut self, name: &str, value: &str) {
        if value.len() < Self::MIN_LEN {
            return;
        }
        let reference = format!("${{{name}}}");
        // As written, and as a URL carries it (percent-encoded, `+` or `%20` for spaces).
        let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
        for form in [value.to_owned(), encoded.replace('+', "%20"), encoded] {
            if !self.replacements.iter().any(|(v, _)| *v == form) {
                self.replacements.push((form, reference.clone()));
            }
        }
        self.replacements
            .sort_by_key(|(value, _)| std::cmp::Reverse(value.len()));
    }

    /// `text` with every value from the environment replaced by its `${NAME}`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (value, reference) in &self.replacements {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), reference);
            }
        }
        out
    }

    /// The error with its message scrubbed; kind, backend, operation, stream and retryability
    /// kept. The source is dropped: its text may hold a value too.
    pub fn scrub_error(&self, error: Error) -> Error {
        if self.replacements.is_empty() {
            return error;
        }
        let mut scrubbed = Error::new(error.kind(), self.scrub(error.message()))
            .with_retryable(error.is_retryable());
        if let Some(backend) = error.backend() {
            scrubbed = scrubbed.with_backend(backend);
        }
        if let Some(operation) = error.operation() {
            let stream = error.stream().map(|s| self.scrub(s));
            scrubbed = scrubbed.with_operation(operation, stream.as_deref());
        }
        scrubbed
    }

    /// A log writer for `tracing_subscriber` that scrubs each line on its way to stderr.
    pub fn stderr_writer(self) -> ScrubbedStderr {
        ScrubbedStderr(Arc::new(self))
    }
}

/// Stderr with [`Secrets::scrub`] applied to every write (a log line is one write).
#[derive(Clone)]
pub struct ScrubbedStderr(Arc<Secrets>);

impl Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.replacements.is_empty() {
            return std::io::stderr().write(buf);
        }
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(self.0.scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

// tracing-subscriber comes with the command line (feature `cli`); a library build without it
// (the fuzz targets' `default-features = false`) has no subscriber to hand the writer to.
#[cfg(feature = "cli")]
impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ScrubbedStderr {
    type Writer = ScrubbedStderr;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Replaces `${NAME}`, recording each value in `secrets`; `Err(NAME)` for the first variable
/// that is not set.
pub(super) fn expand_env(
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
    secrets: &mut Secrets,
) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        let found = env(name).ok_or_else(|| name.to_string())?;
        secrets.add(name, &found);
        out.push_str(&found);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_from_the_environment_are_replaced_by_their_reference() {
        let mut secrets = Secrets::default();
        let env = |name: &str| match name {
            "PW" => Some("s3cr&t value".to_string()),
            "ON" => Some("on".to_string()),
            _ => None,
        };
        let expanded = expand_env("kafka://u:${PW}@h?x=${ON}", &env, &mut secrets).unwrap();
        assert_eq!(expanded, "kafka://u:s3cr&t value@h?x=on");
        assert_eq!(
            secrets.scrub("failed: s3cr&t value, s3cr%26t%20value, s3cr%26t+value, on"),
            "failed: ${PW}, ${PW}, ${PW}, on"
        );
        let error = secrets
            .scrub_error(Error::unauthorized("bad password s3cr&t value").with_backend("kafka"));
        assert_eq!(error.to_string(), "kafka: unauthorized: bad password ${PW}");
        assert!(!format!("{secrets:?}").contains("s3cr"));
        assert_eq!(
            expand_env("${NOPE}", &env, &mut secrets),
            Err("NOPE".into())
        );
    }
}
