//! The upload bandwidth cap: a token bucket on image bytes, one second of burst, that lets a
//! chunk larger than the bucket through by going into debt and sleeping it off.

use std::time::Duration;

use tokio::time::Instant;

/// Limits the average rate of [`TokenBucket::take`]n bytes to `rate` per second.
#[derive(Debug)]
pub struct TokenBucket {
    /// Bytes per second; 0 = unlimited.
    rate: u64,
    /// Bytes that may go now; negative after a chunk larger than what was there.
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket; `rate` 0 never waits.
    pub fn new(rate: u64) -> Self {
        Self { rate, tokens: rate as f64, last: Instant::now() }
    }

    /// Waits until `bytes` may be sent within the cap, then accounts for them.
    pub async fn take(&mut self, bytes: usize) {
        if self.rate == 0 {
            return;
        }
        let rate = self.rate as f64;
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(rate);
        self.last = now;
        self.tokens -= bytes as f64;
        if self.tokens < 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(-self.tokens / rate)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits() {
        let mut bucket = TokenBucket::new(0);
        let start = Instant::now();
        for _ in 0..100 {
            bucket.take(1 << 20).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn average_rate_stays_within_the_cap_after_one_second_of_burst() {
        let mut bucket = TokenBucket::new(1000);
        let start = Instant::now();
        // 5000 bytes at 1000 B/s with 1000 bytes of burst: 4 s
        for _ in 0..10 {
            bucket.take(500).await;
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_secs(4) && elapsed < Duration::from_millis(4010), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_chunk_larger_than_the_bucket_goes_and_the_debt_is_slept_off() {
        let mut bucket = TokenBucket::new(1000);
        let start = Instant::now();
        bucket.take(3000).await;
        assert!(start.elapsed() >= Duration::from_secs(2), "{:?}", start.elapsed());
        // the debt is paid: after idling a second the bucket is full again
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = Instant::now();
        bucket.take(1000).await;
        assert_eq!(idle.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_refills_at_most_one_second_of_burst() {
        let mut bucket = TokenBucket::new(1000);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let start = Instant::now();
        bucket.take(2000).await;
        assert!(start.elapsed() >= Duration::from_secs(1), "{:?}", start.elapsed());
    }
}
