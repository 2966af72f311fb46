//! Rate windows on PostgreSQL. An admission locks its subjects' `rate_subjects` rows (in
//! subject order, so two admissions cannot deadlock) before reading their buckets: admissions
//! of one subject queue, from every process on the database.

use async_trait::async_trait;

use super::PostgresStore;
use crate::error::{Result, StoreError};
use crate::model::{LimitSubject, Timestamp};
use crate::window::{self, Bucket};
use crate::LimitStore;

#[async_trait]
impl LimitStore for PostgresStore {
    async fn admit(&self, subjects: &[LimitSubject], tokens: i64, now: Timestamp) -> Result<i64> {
        let second = now.timestamp();
        let start = window::window_start(second);
        let mut names: Vec<String> = subjects.iter().map(|s| s.subject.clone()).collect();
        names.sort();
        names.dedup();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO rate_subjects (subject) SELECT unnest($1::TEXT[]) \
             ON CONFLICT (subject) DO NOTHING",
        )
        .bind(&names)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "SELECT subject FROM rate_subjects WHERE subject = ANY($1) ORDER BY subject FOR UPDATE",
        )
        .bind(&names)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM rate_buckets WHERE subject = ANY($1) AND second < $2")
            .bind(&names)
            .bind(start)
            .execute(&mut *tx)
            .await?;
        let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT subject, second, requests, tokens FROM rate_buckets WHERE subject = ANY($1)",
        )
        .bind(&names)
        .fetch_all(&mut *tx)
        .await?;
        for limits in subjects {
            let buckets: Vec<Bucket> = rows
                .iter()
                .filter(|row| row.0 == limits.subject)
                .map(|&(_, second, requests, tokens)| Bucket::from((second, requests, tokens)))
                .collect();
            window::check(&buckets, second, limits, tokens)
                .map_err(|r| StoreError::refused(limits, r, tokens))?;
        }
        sqlx::query(
            "INSERT INTO rate_buckets (subject, second, requests, tokens) \
             SELECT unnest($1::TEXT[]), $2, 1, $3 ON CONFLICT (subject, second) DO UPDATE SET \
             requests = rate_buckets.requests + 1, tokens = rate_buckets.tokens + excluded.tokens",
        )
        .bind(&names)
        .bind(second)
        .bind(tokens)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(second)
    }

    async fn correct_tokens(&self, subjects: &[String], second: i64, delta: i64) -> Result<()> {
        sqlx::query(
            "UPDATE rate_buckets SET tokens = GREATEST(tokens - $3, 0) \
             WHERE subject = ANY($1) AND second = $2",
        )
        .bind(subjects)
        .bind(second)
        .bind(delta)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
