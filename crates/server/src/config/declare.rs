//! The `settings!` declaration: one row per setting, from which everything else about the
//! setting is generated, so adding or changing one is a one-row edit.
//!
//! A row reads
//!
//! ```text
//! /// What the setting means, in the words of docs/configuration.md (one table cell).
//! field: Type = "CUSTODY_VARIABLE" [in file "key"],
//!     default "text"                     // written as in the environment; checked like a value
//!   | unset "what the docs say" => expr, // the value when neither place configures it
//!     [range LO..=HI [else "reason"]]    // refuses other numbers ("out of range" by default)
//!     [check function];                  // fn(written) -> Result<written, &'static str>
//! ```
//!
//! and generates: the `Config` field with its rustdoc; the file's key (the field's name unless
//! `in file` renames it) with the TOML type the field's [`SettingType`](super::written::SettingType)
//! is written in; the environment variable and its parser; the merge (environment over file over
//! default); the checks, whose failures name the variable; the entry of `KNOWN_VARIABLES`; and
//! the entry of `SETTINGS`, from which docs/configuration.md's table is checked.
//!
//! `derived(configured) { field: Type = expr; }` declares `Config` fields that are not settings
//! but follow from them; `expr` may read the settings by name and `configured.<setting>`, which
//! is whether the file or the environment configured it.

macro_rules! settings {
    (
        $(#[$config_meta:meta])*
        pub struct $config:ident;
        also known: $($also_known:expr),*;
        derived($configured:ident) {
            $(
                $(#[doc = $derived_doc:literal])*
                $derived:ident: $derived_ty:ty = $derived_value:expr;
            )*
        }
        $(
            $(#[doc = $doc:literal])+
            $field:ident: $ty:ty = $env:literal $(in file $key:literal)?,
                $(default $default:literal)? $(unset $unset_doc:literal => $fallback:expr)?
                $(, range $lo:literal ..= $hi:literal $(else $out_of_range:literal)?)?
                $(, check $check:expr)?;
        )*
    ) => {
        $(#[$config_meta])*
        pub struct $config {
            $(
                #[doc = settings!(@field_doc $env, $(default $default)? $(unset $unset_doc)?)]
                #[doc = ""]
                $(#[doc = $doc])+
                pub $field: $ty,
            )*
            $(
                $(#[doc = $derived_doc])*
                pub $derived: $derived_ty,
            )*
        }

        /// Every variable the server reads; anything else starting `CUSTODY_` is reported.
        pub const KNOWN_VARIABLES: &[&str] = &[$($env,)* $($also_known),*];

        /// Every setting, as docs/configuration.md's table shows it.
        pub const SETTINGS: &[SettingDoc] = &[$(
            SettingDoc {
                env: $env,
                file_key: settings!(@key $field $(, $key)?),
                default: settings!(@default_doc $(default $default)? $(unset $unset_doc)?),
                meaning: &[$($doc),+],
                range: settings!(@range_doc $(, $lo, $hi)?),
            },
        )*];

        /// The file's shape: the same settings as the environment, lower-case, without the prefix.
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FileSettings {
            $(
                $(#[serde(rename = $key)])?
                $field: Option<<$ty as $crate::config::written::SettingType>::Written>,
            )*
        }

        /// Which settings the file or the environment configured; derived fields read the ones
        /// they need.
        #[derive(Default)]
        #[allow(dead_code)]
        struct Configured {
            $($field: bool,)*
        }

        impl $config {
            /// Merges the environment over the file over the defaults and checks every setting,
            /// in the order declared.
            fn resolve(vars: &BTreeMap<String, String>, file: FileSettings) -> Result<$config, ConfigError> {
                use $crate::config::written::{default_of, merge, within, SettingType};
                let mut configured = Configured::default();
                $(
                    let written = merge(vars.get($env), file.$field).map_err(|reason| invalid($env, reason))?;
                    configured.$field = written.is_some();
                    let finish = |written: <$ty as SettingType>::Written| -> Result<$ty, &'static str> {
                        let written = settings!(@range written $(, $lo, $hi $(, $out_of_range)?)?)?;
                        let written = settings!(@check written $(, $check)?)?;
                        <$ty as SettingType>::from_written(written)
                    };
                    let $field: $ty = settings!(
                        @value written, finish $(, default $default)? $(, unset $fallback)?
                    ).map_err(|reason| invalid($env, reason))?;
                )*
                let $configured = configured;
                Ok($config {
                    $($derived: $derived_value,)*
                    $($field,)*
                })
            }
        }
    };

    (@field_doc $env:literal, default $default:literal) => {
        concat!("`", $env, "`, default `", $default, "`:")
    };
    (@field_doc $env:literal, unset $unset_doc:literal) => {
        concat!("`", $env, "`, default ", $unset_doc, ":")
    };

    (@key $field:ident) => { stringify!($field) };
    (@key $field:ident, $key:literal) => { $key };

    (@default_doc default $default:literal) => { concat!("`", $default, "`") };
    (@default_doc unset $unset_doc:literal) => { $unset_doc };

    (@range_doc) => { None };
    (@range_doc, $lo:literal, $hi:literal) => { Some(($lo, $hi)) };

    (@range $written:ident) => { Ok::<_, &'static str>($written) };
    (@range $written:ident, $lo:literal, $hi:literal) => { within($written, $lo..=$hi, "out of range") };
    (@range $written:ident, $lo:literal, $hi:literal, $reason:literal) => { within($written, $lo..=$hi, $reason) };

    (@check $written:ident) => { Ok::<_, &'static str>($written) };
    (@check $written:ident, $check:expr) => { $check($written) };

    (@value $written:ident, $finish:ident, default $default:literal) => {
        match $written {
            Some(written) => $finish(written),
            None => default_of($default).and_then($finish),
        }
    };
    (@value $written:ident, $finish:ident, unset $fallback:expr) => {
        match $written {
            Some(written) => $finish(written),
            None => Ok($fallback),
        }
    };
}

pub(super) use settings;
