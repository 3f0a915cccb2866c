//! One retry policy for the adapters that talk to remote systems (the SFTP
//! source, the IMAP sink): how often, and how long to wait in between.
//! Each adapter says which of its failures are worth another attempt; the
//! pause is exponential with jitter, so that parallel runs (several Lambda
//! containers, two connectors) do not retry in lockstep.

use std::time::Duration;

use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// First pause; doubled each retry up to `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    /// A few quick retries (a local directory, a test).
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `retry` (1-based), with up to 25 %
    /// random jitter.
    pub fn pause(&self, retry: u32) -> Duration {
        let doubled = self
            .backoff
            .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)));
        let base = doubled.min(self.backoff_max.max(self.backoff));
        base + base.mul_f64(rand::random::<f64>() * 0.25)
    }

    /// Runs `attempt` until it succeeds, fails in a way `retryable` says no
    /// retry can help, or the attempts are spent; `on_retry` is told of
    /// each retry (for counts).
    pub async fn run<T, F, Fut>(
        &self,
        what: &str,
        retryable: impl Fn(&crate::Error) -> bool,
        mut on_retry: impl FnMut(),
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(error) if retryable(&error) && tries < self.attempts => {
                    let pause = self.pause(tries);
                    tracing::warn!(
                        what,
                        attempt = tries,
                        of = self.attempts,
                        pause_ms = pause.as_millis() as u64,
                        %error,
                        "retrying"
                    );
                    on_retry();
                    tokio::time::sleep(pause).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_maximum_with_at_most_a_quarter_of_jitter() {
        let policy = RetryPolicy {
            attempts: 6,
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_millis(350),
        };
        let within = |pause: Duration, base_ms: u64| {
            let base = Duration::from_millis(base_ms);
            pause >= base && pause <= base + base / 4
        };
        assert!(within(policy.pause(1), 100));
        assert!(within(policy.pause(2), 200));
        assert!(within(policy.pause(3), 350));
        assert!(within(policy.pause(40), 350));
    }

    #[tokio::test]
    async fn stops_at_a_failure_no_retry_can_help_and_after_the_last_attempt() {
        let policy = RetryPolicy {
            attempts: 3,
            backoff: Duration::from_millis(1),
            backoff_max: Duration::from_millis(1),
        };
        let mut calls = 0;
        let mut retries = 0;
        let result: Result<()> = policy
            .run(
                "x",
                |_| true,
                || retries += 1,
                || {
                    calls += 1;
                    async { Err(crate::Error::Config("down".into())) }
                },
            )
            .await;
        assert!(result.is_err());
        assert_eq!((calls, retries), (3, 2));
        let mut calls = 0;
        let _ = policy
            .run(
                "x",
                |_| false,
                || {},
                || {
                    calls += 1;
                    async { Err::<(), _>(crate::Error::Config("refused".into())) }
                },
            )
            .await;
        assert_eq!(calls, 1);
    }
}
