//! Query strings of list routes: every parameter is named in the operation's `IntoParams`
//! type (which also documents it), unknown or repeated names are refused, and every problem
//! is reported at once, keyed by parameter name. Unknown names are reported up to
//! [`MAX_UNKNOWN_NAMED`] of them, each cut to [`MAX_NAME_CHARS`] characters, with the count of
//! the others, so that a query of thousands of names does not come back in the answer.

use std::any::TypeId;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};

use serde_json::{Map, Value};
use utoipa::openapi::path::ParameterIn;
use utoipa::IntoParams;

use super::cursor::{CursorCodec, CursorScope};
use super::error::ApiError;
use crate::domain::{parse_rfc3339, Timestamp};
use crate::store::{PageKey, PageRequest};

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size.
pub const MAX_LIMIT: u32 = 100;

/// How many unknown parameters a `400` names.
pub const MAX_UNKNOWN_NAMED: usize = 20;
/// How many characters of an unknown parameter's name a `400` repeats.
pub const MAX_NAME_CHARS: usize = 100;

/// A parsed query string being turned into typed values.
#[derive(Debug)]
pub struct QueryParams {
    values: BTreeMap<String, String>,
    errors: Map<String, Value>,
    /// Unknown parameters left out of `errors`.
    unnamed: usize,
}

/// `name` cut to [`MAX_NAME_CHARS`] characters, marked with `…` when cut.
fn shortened(name: String) -> String {
    match name.char_indices().nth(MAX_NAME_CHARS) {
        Some((end, _)) => format!("{}…", &name[..end]),
        None => name,
    }
}

impl QueryParams {
    /// Splits `raw`, accepting only the parameters `P` documents.
    pub fn parse<P: IntoParams + 'static>(raw: Option<&str>) -> Self {
        let allowed = allowed_names::<P>();
        let mut values = BTreeMap::new();
        let mut errors = Map::new();
        let mut unknown = 0;
        let mut unnamed = 0;
        for (name, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if !allowed.iter().any(|a| *a == name) {
                unknown += 1;
                if unknown > MAX_UNKNOWN_NAMED {
                    unnamed += 1;
                    continue;
                }
                errors.insert(
                    shortened(name.into_owned()),
                    Value::from(format!(
                        "unknown parameter; accepted: {}",
                        allowed.join(", ")
                    )),
                );
            } else {
                let name = name.into_owned();
                match values.entry(name) {
                    Entry::Vacant(slot) => {
                        slot.insert(value.into_owned());
                    }
                    Entry::Occupied(slot) => {
                        errors.insert(slot.key().clone(), Value::from("given more than once"));
                    }
                }
            }
        }
        Self {
            values,
            errors,
            unnamed,
        }
    }

    /// The value of `name` turned into `T` by `parse`, recording any error under `name`.
    pub fn take<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.values.remove(name)?;
        match parse(&text) {
            Ok(v) => Some(v),
            Err(problem) => {
                self.errors.insert(name.to_string(), Value::from(problem));
                None
            }
        }
    }

    /// `400 VALIDATION_FAILED` naming every bad parameter, if there were any.
    pub fn check(&self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else if self.unnamed == 0 {
            Err(ApiError::validation(self.errors.clone()))
        } else {
            let names: Vec<&str> = self.errors.keys().map(String::as_str).collect();
            let message = format!(
                "invalid request: {}, and {} more unknown parameters",
                names.join(", "),
                self.unnamed
            );
            Err(
                ApiError::new(super::error::ErrorCode::ValidationFailed, message)
                    .with_details(Value::Object(self.errors.clone())),
            )
        }
    }

    /// Reads `limit` and `cursor` (the cursor checked against `scope`) once filters are valid.
    pub fn paging(&mut self, codec: &CursorCodec, scope: &CursorScope) -> Result<Paging, ApiError> {
        let limit = self.take("limit", parse_limit).unwrap_or(DEFAULT_LIMIT);
        let cursor = self.take("cursor", |s| Ok(s.to_string()));
        self.check()?;
        let after = cursor.map(|c| codec.decode(scope, &c)).transpose()?;
        Ok(Paging { after, limit })
    }
}

/// The query parameter names `P` documents, computed once per type: building utoipa's
/// parameter objects on every request would cost more than the rest of the parsing.
fn allowed_names<P: IntoParams + 'static>() -> &'static [String] {
    static CACHE: OnceLock<Mutex<HashMap<TypeId, &'static [String]>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    cache.entry(TypeId::of::<P>()).or_insert_with(|| {
        let names: Vec<String> = P::into_params(|| Some(ParameterIn::Query))
            .into_iter()
            .map(|p| p.name)
            .collect();
        Box::leak(names.into_boxed_slice())
    })
}

/// Where a page starts and how long it is.
#[derive(Clone, Copy, Debug)]
pub struct Paging {
    pub after: Option<PageKey>,
    pub limit: u32,
}

impl Paging {
    /// The store request: one row more than the page, to learn whether another page follows.
    pub fn request(&self) -> PageRequest {
        PageRequest {
            after: self.after,
            fetch: self.limit + 1,
        }
    }

    /// Trims the extra row and issues the cursor of the next page, if there is one.
    pub fn finish<T>(
        &self,
        mut rows: Vec<T>,
        key: impl Fn(&T) -> PageKey,
        codec: &CursorCodec,
        scope: &CursorScope,
    ) -> (Vec<T>, Option<String>) {
        let more = rows.len() > self.limit as usize;
        rows.truncate(self.limit as usize);
        let next = if more {
            rows.last().map(|last| codec.encode(scope, &key(last)))
        } else {
            None
        };
        (rows, next)
    }
}

fn parse_limit(text: &str) -> Result<u32, String> {
    let problem = || format!("must be an integer between 1 and {MAX_LIMIT}");
    let limit: u32 = text.parse().map_err(|_| problem())?;
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(problem())
    }
}

/// An RFC 3339 timestamp parameter.
pub fn timestamp(text: &str) -> Result<Timestamp, String> {
    parse_rfc3339(text)
}

/// A `true`/`false` parameter.
pub fn boolean(text: &str) -> Result<bool, String> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("must be true or false".into()),
    }
}

/// A UUID parameter parsed into an id type.
pub fn uuid<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse().map_err(|_| "must be a UUID".to_string())
}

/// A value of a closed set.
pub fn one_of<T: std::str::FromStr>(text: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e: T::Err| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_outside_the_range_are_refused_not_clamped() {
        assert_eq!(parse_limit("1"), Ok(1));
        assert_eq!(parse_limit("100"), Ok(100));
        for bad in ["0", "101", "-1", "ten", "1.5", ""] {
            assert!(parse_limit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        assert_eq!(shortened("abc".into()), "abc");
        let long = "é".repeat(150);
        let cut = shortened(long);
        assert_eq!(cut.chars().count(), MAX_NAME_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
