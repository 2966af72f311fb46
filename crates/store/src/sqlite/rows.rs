//! How SQLite's two drivers read columns: sqlx's pool (reads and most writes) and the ledger
//! writer's rusqlite connection (see `writer`). SQLite stores every value here as an INTEGER or
//! TEXT (or NULL); the decoders themselves are shared (`crate::rows`).

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::error::Result;
pub(super) use crate::rows::*;

impl Columns for SqliteRow {
    fn opt_int(&self, column: &str) -> Result<Option<i64>> {
        Ok(self.try_get(column)?)
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>> {
        Ok(self.try_get(column)?)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn opt_int(&self, column: &str) -> Result<Option<i64>> {
        Ok(self.get(column)?)
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>> {
        Ok(self.get(column)?)
    }
}
