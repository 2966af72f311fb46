//! Rate windows on SQLite: `BEGIN IMMEDIATE` serialises every admission, across processes too.

use async_trait::async_trait;

use super::SqliteStore;
use crate::error::{Result, StoreError};
use crate::model::{LimitSubject, Timestamp};
use crate::window::{self, Bucket};
use crate::LimitStore;

#[async_trait]
impl LimitStore for SqliteStore {
    async fn admit(&self, subjects: &[LimitSubject], tokens: i64, now: Timestamp) -> Result<i64> {
        let second = now.timestamp();
        let start = window::window_start(second);
        let mut tx = self.write().await?;
        for limits in subjects {
            sqlx::query("DELETE FROM rate_buckets WHERE subject = $1 AND second < $2")
                .bind(&limits.subject)
                .bind(start)
                .execute(&mut *tx)
                .await?;
            let buckets: Vec<(i64, i64, i64)> = sqlx::query_as(
                "SELECT second, requests, tokens FROM rate_buckets WHERE subject = $1",
            )
            .bind(&limits.subject)
            .fetch_all(&mut *tx)
            .await?;
            let buckets: Vec<Bucket> = buckets.into_iter().map(Bucket::from).collect();
            window::check(&buckets, second, limits, tokens)
                .map_err(|r| StoreError::refused(limits, r, tokens))?;
        }
        for limits in subjects {
            sqlx::query(
                "INSERT INTO rate_buckets (subject, second, requests, tokens) \
                 VALUES ($1, $2, 1, $3) ON CONFLICT (subject, second) DO UPDATE SET \
                 requests = rate_buckets.requests + 1, tokens = rate_buckets.tokens + excluded.tokens",
            )
            .bind(&limits.subject)
            .bind(second)
            .bind(tokens)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(second)
    }

    async fn correct_tokens(&self, subjects: &[String], second: i64, delta: i64) -> Result<()> {
        let mut tx = self.write().await?;
        for subject in subjects {
            sqlx::query(
                "UPDATE rate_buckets SET tokens = MAX(tokens - $3, 0) \
                 WHERE subject = $1 AND second = $2",
            )
            .bind(subject)
            .bind(second)
            .bind(delta)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
