//! Secrets that never reach a log.
//!
//! A [`Secret`] prints as `***` in `Debug`, `Display` and serialisation; the value is read only through
//! [`Secret::expose`]. Every secret is also registered with the process-wide [`Redactor`], and the log writer built by
//! [`Redactor::make_writer`] replaces any registered value in every line it writes — so a key that reaches a log by
//! another path (an error message echoing a URL, a request dump) is still masked.

use std::fmt;
use std::io::{self, Write};
use std::sync::{Arc, OnceLock, RwLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The text that replaces a secret.
pub const MASK: &str = "***";

/// A secret string: API keys, bot tokens, private keys, passwords.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a value and registers it with the global [`Redactor`].
    pub fn new(value: impl Into<String>) -> Self {
        let v: String = value.into();
        Redactor::global().register(&v);
        Secret(v.into())
    }

    /// The secret value. Call only where the value is used, never to print it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True for an empty value.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `given` equals the secret, compared in time independent of where they differ (for tokens that
    /// callers present: API bearer tokens, webhook secrets). An empty secret matches nothing.
    pub fn matches(&self, given: &str) -> bool {
        let (a, b) = (given.as_bytes(), self.0.as_bytes());
        !b.is_empty() && a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({MASK})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Secret::new(String::deserialize(d)?))
    }
}

/// Replaces registered secret values in text.
#[derive(Default)]
pub struct Redactor {
    secrets: RwLock<Vec<String>>,
}

/// Secrets shorter than this are not registered: masking a 3-letter string would mangle ordinary text.
pub const MIN_REDACTED_LEN: usize = 6;

impl Redactor {
    /// The process-wide redactor.
    pub fn global() -> &'static Redactor {
        static R: OnceLock<Redactor> = OnceLock::new();
        R.get_or_init(Redactor::default)
    }

    /// Adds a value to mask (a private key is also masked without its `0x` prefix).
    pub fn register(&self, value: &str) {
        let mut vals = vec![value.to_string()];
        if let Some(stripped) = value.strip_prefix("0x") {
            vals.push(stripped.to_string());
        }
        let mut s = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        for v in vals {
            if v.len() >= MIN_REDACTED_LEN && !s.contains(&v) {
                s.push(v);
            }
        }
        // Longest first, so a secret that contains another is masked whole.
        s.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    /// The text with every registered secret replaced by [`MASK`].
    pub fn redact(&self, text: &str) -> String {
        let s = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        let mut out = text.to_string();
        for v in s.iter() {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MASK);
            }
        }
        out
    }

    /// A `tracing_subscriber` writer that redacts every line written through it.
    #[cfg(feature = "log")]
    pub fn make_writer<W>(inner: W) -> RedactingMakeWriter<W>
    where
        W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + 'static,
    {
        RedactingMakeWriter { inner }
    }
}

/// Builds [`RedactingWriter`]s for `tracing_subscriber::fmt`.
#[cfg(feature = "log")]
pub struct RedactingMakeWriter<W> {
    inner: W,
}

#[cfg(feature = "log")]
impl<'a, W> tracing_subscriber::fmt::MakeWriter<'a> for RedactingMakeWriter<W>
where
    W: tracing_subscriber::fmt::MakeWriter<'a>,
{
    type Writer = RedactingWriter<W::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter { inner: self.inner.make_writer(), buf: Vec::new() }
    }
}

/// Buffers one log event and writes it redacted when flushed or dropped.
pub struct RedactingWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> RedactingWriter<W> {
    /// Wraps any writer.
    pub fn new(inner: W) -> Self {
        RedactingWriter { inner, buf: Vec::new() }
    }

    fn drain(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        self.inner.write_all(Redactor::global().redact(&text).as_bytes())
    }
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.drain()?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        let _ = self.drain();
        let _ = self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "log")]
    use std::sync::Mutex;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("sk-live-abcdef123456");
        assert_eq!(format!("{s}"), MASK);
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.expose(), "sk-live-abcdef123456");
    }

    #[test]
    fn matches_only_the_exact_value() {
        let s = Secret::new("token-0123456789abcdef");
        assert!(s.matches("token-0123456789abcdef"));
        for wrong in ["", "token-0123456789abcdeF", "token-0123456789abcde", "token-0123456789abcdef0"] {
            assert!(!s.matches(wrong), "{wrong}");
        }
        assert!(!Secret::new("").matches(""), "an empty secret matches nothing");
    }

    #[test]
    fn redactor_masks_registered_values_and_hex_without_prefix() {
        let key = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
        let _s = Secret::new(key);
        let line = format!("signing with {key} / {}", &key[2..]);
        let out = Redactor::global().redact(&line);
        assert!(!out.contains(&key[2..]), "{out}");
        assert_eq!(out, "signing with *** / ***");
    }

    #[cfg(feature = "log")]
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    #[cfg(feature = "log")]
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[cfg(feature = "log")]
    #[test]
    fn tracing_output_is_redacted() {
        let token = "123456789:AAE-telegram-bot-token-for-test";
        let secret = Secret::new(token);
        let sink = Sink::default();
        let sink2 = sink.clone();
        let make = Redactor::make_writer(move || sink2.clone());
        let subscriber = tracing_subscriber::fmt().with_writer(make).with_ansi(false).finish();
        tracing::subscriber::with_default(subscriber, || {
            // A careless log of the raw value, and one of a URL that embeds it.
            tracing::info!(url = %format!("https://api.telegram.org/bot{}/getMe", secret.expose()), "request");
            tracing::warn!("token was {}", secret.expose());
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("request"), "{text}");
        assert!(!text.contains(token), "secret leaked: {text}");
        assert!(text.contains("/bot***/getMe"), "{text}");
    }
}
