//! Request quotas per user and per channel (`governor`, keyed by id): over
//! the limit, the caller learns how long to wait.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

pub(crate) struct RateLimits {
    users: DefaultKeyedRateLimiter<u64>,
    channels: DefaultKeyedRateLimiter<u64>,
    clock: DefaultClock,
}

impl RateLimits {
    /// `user_per_minute` and `channel_per_minute` requests, each at least 1.
    pub(crate) fn new(user_per_minute: u32, channel_per_minute: u32) -> Self {
        let quota = |n: u32| Quota::per_minute(NonZeroU32::new(n.max(1)).expect("at least 1"));
        Self {
            users: DefaultKeyedRateLimiter::keyed(quota(user_per_minute)),
            channels: DefaultKeyedRateLimiter::keyed(quota(channel_per_minute)),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one request from both quotas, or says how long to wait. The
    /// user's quota is asked first, so one user over their limit cannot use
    /// up the channel's.
    pub(crate) fn check(&self, user: u64, channel: u64) -> Result<(), Duration> {
        let now = self.clock.now();
        self.users
            .check_key(&user)
            .map_err(|not_until| not_until.wait_time_from(now))?;
        self.channels
            .check_key(&channel)
            .map_err(|not_until| not_until.wait_time_from(now))
    }

    /// Forgets keys whose quotas are full again (call now and then).
    pub(crate) fn shrink(&self) {
        self.users.retain_recent();
        self.channels.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_channels_are_limited_separately() {
        let limits = RateLimits::new(2, 3);
        assert!(limits.check(1, 10).is_ok());
        assert!(limits.check(1, 10).is_ok());
        let wait = limits.check(1, 10).unwrap_err();
        assert!(
            wait > Duration::from_secs(20) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        // The refused request took nothing from the channel: one request is left there.
        assert!(limits.check(2, 10).is_ok());
        assert!(limits.check(3, 10).is_err());
        // The first user elsewhere is still over their own quota.
        assert!(limits.check(1, 11).is_err());
        assert!(limits.check(4, 11).is_ok());
    }
}
