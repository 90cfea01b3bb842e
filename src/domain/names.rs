//! Names parsed once at the edge: [`ProviderSlug`], a provider this build knows, and
//! [`SignalKind`], a well-formed signal kind. Code behind the edge takes them, not strings.

use std::borrow::Cow;
use std::fmt;

/// A provider's slug (`github`, `google_drive`): a `&'static str` from the provider catalogue,
/// so holding one means the provider exists in this build. Made by the provider registry when
/// it parses a request's slug, or from a descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProviderSlug(&'static str);

impl ProviderSlug {
    /// The slug of a catalogue entry.
    pub const fn of_catalogue(slug: &'static str) -> Self {
        Self(slug)
    }

    /// The slug as text.
    pub const fn as_str(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for ProviderSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The longest signal kind accepted.
const MAX_KIND_LEN: usize = 64;

/// A signal kind: snake_case ASCII, 1 to 64 characters, starting with a letter
/// (`issue_created`, `email_received`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SignalKind(Cow<'static, str>);

impl SignalKind {
    /// A kind spelled in code. A malformed one is a bug, caught by the catalogue's tests and
    /// the first run of its connector.
    pub const fn of(kind: &'static str) -> Self {
        assert!(well_formed(kind), "a signal kind is snake_case");
        Self(Cow::Borrowed(kind))
    }

    /// Parses a kind from input (a query filter, a stored row).
    pub fn parse(text: &str) -> Result<Self, String> {
        if well_formed(text) {
            Ok(Self(Cow::Owned(text.to_string())))
        } else {
            Err(format!(
                "must be a snake_case signal kind of at most {MAX_KIND_LEN} characters"
            ))
        }
    }

    /// The kind as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SignalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<&str> for SignalKind {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl From<SignalKind> for String {
    fn from(kind: SignalKind) -> Self {
        kind.0.into_owned()
    }
}

const fn well_formed(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_KIND_LEN || !bytes[0].is_ascii_lowercase() {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_snake_case_and_bounded() {
        assert_eq!(SignalKind::of("issue_created").as_str(), "issue_created");
        assert_eq!(
            SignalKind::parse("email_received"),
            Ok(SignalKind::of("email_received"))
        );
        for bad in [
            "",
            "Issue",
            "issue-created",
            "1st",
            "a b",
            &"k".repeat(65),
            "é",
        ] {
            assert!(SignalKind::parse(bad).is_err(), "{bad:?}");
        }
    }
}
