//! Cursor pagination shared by every list: `limit` 1 to 1000 (default 100) and an opaque cursor
//! that only the store that issued it understands.

/// The default page size.
pub const DEFAULT_LIMIT: u32 = 100;
/// The largest page size.
pub const MAX_LIMIT: u32 = 1000;

/// A request for one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    limit: u32,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A limit outside 1..=1000.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limit must be between 1 and {MAX_LIMIT}")]
pub struct InvalidLimit;

impl PageRequest {
    /// A page request; `None` takes the default limit.
    pub fn new(limit: Option<u32>, cursor: Option<String>) -> Result<Self, InvalidLimit> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(InvalidLimit);
        }
        Ok(Self { limit, cursor })
    }

    /// The first page with the default limit.
    pub fn first() -> Self {
        Self { limit: DEFAULT_LIMIT, cursor: None }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The cursor for the next page, or `None` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Maps the items, keeping the cursor.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page { items: self.items.into_iter().map(f).collect(), next_cursor: self.next_cursor }
    }
}
