//! How a setting's value is written and how it becomes the value the server uses. A setting is
//! written as a TOML value in the file and as text in the environment ([`Written`]); its type in
//! [`Config`](super::Config) is built from that written form ([`SettingType`]). The
//! [`settings!`](super::declare::settings) declaration picks both by the field's type, so a row
//! names only what is particular to one setting (its variable, default, range or check).

use super::LogFormat;
use custody_identity::Secret;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;

/// A form a setting is written in: deserialised from the TOML file, parsed from the environment.
pub(super) trait Written: DeserializeOwned {
    /// Reads an environment variable's text. `Ok(None)` when the text does not count as a value,
    /// so the file's value (or the default) applies. The error is the reason, without the value.
    fn from_env(text: &str) -> Result<Option<Self>, &'static str>;

    /// Whether a value, from either place, stands for "not configured".
    fn is_blank(&self) -> bool {
        false
    }
}

/// Text settings take the environment's text as it is, empty included: an empty variable wins
/// over the file and, being blank, leaves the setting unconfigured.
impl Written for String {
    fn from_env(text: &str) -> Result<Option<Self>, &'static str> {
        Ok(Some(text.to_owned()))
    }

    fn is_blank(&self) -> bool {
        self.is_empty()
    }
}

/// Switches: `1`, `true`, `yes`, `on` and their opposites; an empty variable leaves the file's value.
impl Written for bool {
    fn from_env(text: &str) -> Result<Option<Self>, &'static str> {
        match text {
            "" => Ok(None),
            "1" | "true" | "yes" | "on" => Ok(Some(true)),
            "0" | "false" | "no" | "off" => Ok(Some(false)),
            _ => Err("expected true or false"),
        }
    }
}

/// Whole numbers; an empty variable leaves the file's value.
macro_rules! whole_numbers {
    ($($number:ty),*) => {$(
        impl Written for $number {
            fn from_env(text: &str) -> Result<Option<Self>, &'static str> {
                if text.is_empty() {
                    return Ok(None);
                }
                text.parse().map(Some).map_err(|_| "expected a whole number")
            }
        }
    )*};
}
whole_numbers!(i64, u32, u64, usize);

/// A type a setting can have in [`Config`](super::Config), and the form it is written in.
pub(super) trait SettingType: Sized {
    type Written: Written;

    /// The setting's value from its (checked) written form; the error is the reason.
    fn from_written(written: Self::Written) -> Result<Self, &'static str>;
}

/// Types that are their own written form.
macro_rules! written_as_is {
    ($($type:ty),*) => {$(
        impl SettingType for $type {
            type Written = Self;

            fn from_written(written: Self) -> Result<Self, &'static str> {
                Ok(written)
            }
        }
    )*};
}
written_as_is!(String, bool, i64, u32, u64, usize);

impl SettingType for PathBuf {
    type Written = String;

    fn from_written(written: String) -> Result<Self, &'static str> {
        Ok(PathBuf::from(written))
    }
}

impl SettingType for SocketAddr {
    type Written = String;

    fn from_written(written: String) -> Result<Self, &'static str> {
        written.parse().map_err(|_| "expected an address like 127.0.0.1:8080")
    }
}

impl SettingType for Secret {
    type Written = String;

    fn from_written(written: String) -> Result<Self, &'static str> {
        Ok(Secret::new(written))
    }
}

impl SettingType for LogFormat {
    type Written = String;

    fn from_written(written: String) -> Result<Self, &'static str> {
        match written.as_str() {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected pretty or json"),
        }
    }
}

/// A setting that may stay unconfigured: written like its inner type, `Some` once written.
impl<T: SettingType> SettingType for Option<T> {
    type Written = T::Written;

    fn from_written(written: T::Written) -> Result<Self, &'static str> {
        T::from_written(written).map(Some)
    }
}

/// The value of one setting as written: the environment's text wins over the file's value; a
/// blank value from either place is no value.
pub(super) fn merge<W: Written>(env: Option<&String>, file: Option<W>) -> Result<Option<W>, &'static str> {
    let chosen = match env {
        Some(text) => W::from_env(text)?.or(file),
        None => file,
    };
    Ok(chosen.filter(|value| !value.is_blank()))
}

/// The declared default, read as if it came from the environment.
pub(super) fn default_of<W: Written>(text: &str) -> Result<W, &'static str> {
    W::from_env(text)?.filter(|value| !value.is_blank()).ok_or("the declared default is blank")
}

/// Refuses a number outside `range` with `reason`.
pub(super) fn within<N: PartialOrd>(
    value: N,
    range: RangeInclusive<N>,
    reason: &'static str,
) -> Result<N, &'static str> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(reason)
    }
}
