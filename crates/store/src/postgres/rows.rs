//! How PostgreSQL rows read columns: native booleans, `timestamptz` and `TEXT[]`. The decoders
//! themselves are shared (`crate::rows`).

use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::error::Result;
use crate::model::Timestamp;
pub(super) use crate::rows::*;

impl Columns for PgRow {
    fn opt_int(&self, column: &str) -> Result<Option<i64>> {
        Ok(self.try_get(column)?)
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>> {
        Ok(self.try_get(column)?)
    }

    fn opt_flag(&self, column: &str) -> Result<Option<bool>> {
        Ok(self.try_get(column)?)
    }

    fn opt_time(&self, column: &str) -> Result<Option<Timestamp>> {
        Ok(self.try_get(column)?)
    }

    fn opt_list(&self, column: &str) -> Result<Option<Vec<String>>> {
        Ok(self.try_get(column)?)
    }
}
