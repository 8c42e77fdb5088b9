//! Keyset pagination: pages are ordered by (timestamp, id) and a cursor names the last row of the
//! previous page, so a page costs an index range scan however deep it is, and rows inserted
//! meanwhile neither shift nor repeat pages.
//!
//! The cursor is opaque to callers: base64url (no padding) of `"<timestamp>:<id>"`. Lists
//! ordered by a name instead of a time (providers, policies, sealed values) use a [`KeyCursor`]:
//! base64url of a JSON array of the row's key parts.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use custody_identity::page::{Page, PageRequest};
use custody_identity::ports::StoreError;

/// The position after which the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub ts: i64,
    pub id: String,
}

/// Longest cursor accepted, in characters; real ones are about 70.
const MAX_CURSOR_LEN: usize = 200;

impl Cursor {
    pub(crate) fn encode(ts: i64, id: &str) -> String {
        URL_SAFE_NO_PAD.encode(format!("{ts}:{id}"))
    }

    /// Decodes a cursor this module issued; anything else is [`StoreError::InvalidCursor`].
    pub(crate) fn decode(s: &str) -> Result<Cursor, StoreError> {
        if s.len() > MAX_CURSOR_LEN {
            return Err(StoreError::InvalidCursor);
        }
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| StoreError::InvalidCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| StoreError::InvalidCursor)?;
        let (ts, id) = text.split_once(':').ok_or(StoreError::InvalidCursor)?;
        let ts = ts.parse::<i64>().map_err(|_| StoreError::InvalidCursor)?;
        let id_ok =
            !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok {
            return Err(StoreError::InvalidCursor);
        }
        Ok(Cursor { ts, id: id.to_owned() })
    }

    /// The request's cursor, decoded.
    pub(crate) fn of(page: &PageRequest) -> Result<Option<Cursor>, StoreError> {
        page.cursor.as_deref().map(Cursor::decode).transpose()
    }
}

/// The key of the last row of the previous page, for lists ordered by a text key of one or
/// more parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyCursor(pub Vec<String>);

/// Longest key cursor accepted, in characters (two UUIDs or a UUID and a 64-character name fit
/// many times over; instance-secret names are short too).
const MAX_KEY_CURSOR_LEN: usize = 1024;

impl KeyCursor {
    pub(crate) fn encode(parts: &[&str]) -> String {
        // Serialising strings cannot fail; an empty array would be refused on decoding.
        URL_SAFE_NO_PAD.encode(serde_json::to_string(parts).unwrap_or_default())
    }

    /// Decodes a cursor of exactly `parts` key parts this module issued; anything else is
    /// [`StoreError::InvalidCursor`].
    pub(crate) fn decode(s: &str, parts: usize) -> Result<KeyCursor, StoreError> {
        if s.len() > MAX_KEY_CURSOR_LEN {
            return Err(StoreError::InvalidCursor);
        }
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| StoreError::InvalidCursor)?;
        let keys: Vec<String> = serde_json::from_slice(&bytes).map_err(|_| StoreError::InvalidCursor)?;
        if keys.len() != parts {
            return Err(StoreError::InvalidCursor);
        }
        Ok(KeyCursor(keys))
    }

    /// The request's cursor of `parts` key parts, decoded.
    pub(crate) fn of(page: &PageRequest, parts: usize) -> Result<Option<KeyCursor>, StoreError> {
        page.cursor.as_deref().map(|c| KeyCursor::decode(c, parts)).transpose()
    }

    /// The one key part of a single-part cursor.
    pub(crate) fn into_single(self) -> String {
        self.0.into_iter().next().unwrap_or_default()
    }

    /// The two key parts of a two-part cursor.
    pub(crate) fn into_pair(self) -> (String, String) {
        let mut parts = self.0.into_iter();
        (parts.next().unwrap_or_default(), parts.next().unwrap_or_default())
    }
}

/// How many rows to fetch for `page`: one more than the limit, to learn whether a next page exists.
pub(crate) fn fetch_limit(page: &PageRequest) -> i64 {
    i64::from(page.limit()) + 1
}

/// Turns up to `limit + 1` rows into a page: the extra row only signals that there is more.
pub(crate) fn into_page<R, T>(
    rows: Vec<R>,
    page: &PageRequest,
    key: impl Fn(&R) -> (i64, &str),
    convert: impl FnMut(R) -> Result<T, StoreError>,
) -> Result<Page<T>, StoreError> {
    into_page_with(
        rows,
        page,
        |r| {
            let (ts, id) = key(r);
            Cursor::encode(ts, id)
        },
        convert,
    )
}

/// As [`into_page`], with the next page's cursor made by `cursor` from the page's last row.
pub(crate) fn into_page_with<R, T>(
    mut rows: Vec<R>,
    page: &PageRequest,
    cursor: impl Fn(&R) -> String,
    convert: impl FnMut(R) -> Result<T, StoreError>,
) -> Result<Page<T>, StoreError> {
    let limit = usize::try_from(page.limit()).unwrap_or(usize::MAX);
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = if has_more { rows.last().map(cursor) } else { None };
    let items = rows.into_iter().map(convert).collect::<Result<Vec<_>, _>>()?;
    Ok(Page { items, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let c = Cursor::encode(-5, "0f8fad5b-d9cb-469f-a165-70867728950e");
        assert_eq!(Cursor::decode(&c).unwrap(), Cursor { ts: -5, id: "0f8fad5b-d9cb-469f-a165-70867728950e".into() });
    }

    #[test]
    fn key_cursor_round_trip() {
        let c = KeyCursor::encode(&["app", "name:with\"odd\u{0}chars"]);
        assert_eq!(KeyCursor::decode(&c, 2).unwrap().into_pair(), ("app".into(), "name:with\"odd\u{0}chars".into()));
        assert_eq!(KeyCursor::decode(&c, 1), Err(StoreError::InvalidCursor));
        for bad in ["", "!!!", "e30", &URL_SAFE_NO_PAD.encode("[1]"), &"A".repeat(2000)] {
            assert_eq!(KeyCursor::decode(bad, 1), Err(StoreError::InvalidCursor), "{bad}");
        }
    }

    #[test]
    fn garbage_is_invalid() {
        for bad in [
            "",
            "!!!",
            "bm9jb2xvbg",
            &URL_SAFE_NO_PAD.encode("x:abc"),
            &URL_SAFE_NO_PAD.encode("1:a b"),
            &"A".repeat(500),
        ] {
            assert_eq!(Cursor::decode(bad), Err(StoreError::InvalidCursor), "{bad}");
        }
    }

    // Property tests (issue 15 item 17): arbitrary input never panics and never decodes to a
    // position this module would not have issued. `cargo xtask fuzz` runs them longer.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_text_decodes_to_a_valid_cursor_or_is_refused(s in ".{0,300}") {
                if let Ok(c) = Cursor::decode(&s) {
                    prop_assert!(!c.id.is_empty() && c.id.len() <= 64);
                    prop_assert!(c.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
                    prop_assert_eq!(Cursor::decode(&Cursor::encode(c.ts, &c.id)), Ok(c));
                }
                let _ = KeyCursor::decode(&s, 1);
                let _ = KeyCursor::decode(&s, 2);
            }

            #[test]
            fn any_bytes_behind_base64_are_refused_or_valid(bytes in proptest::collection::vec(any::<u8>(), 0..150)) {
                let s = URL_SAFE_NO_PAD.encode(&bytes);
                if let Ok(c) = Cursor::decode(&s) {
                    prop_assert!(c.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
                }
                for parts in 0..3 {
                    if let Ok(k) = KeyCursor::decode(&s, parts) {
                        prop_assert_eq!(k.0.len(), parts);
                    }
                }
            }

            #[test]
            fn issued_cursors_round_trip(ts in any::<i64>(), id in "[A-Za-z0-9_-]{1,64}", a in ".{0,40}", b in ".{0,40}") {
                prop_assert_eq!(Cursor::decode(&Cursor::encode(ts, &id)), Ok(Cursor { ts, id: id.clone() }));
                let key = KeyCursor::encode(&[&a, &b]);
                prop_assert_eq!(KeyCursor::decode(&key, 2).map(KeyCursor::into_pair), Ok((a, b)));
            }
        }
    }
}
